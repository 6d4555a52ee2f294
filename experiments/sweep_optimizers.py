"""Optimizers on the README's tiny GPT-2 (embedded corpus), each at a small learning-rate grid:
AdamW (cosine), AdamW with warmup-stable-decay, Muon, Lion, schedule-free AdamW (issue 28).

  ./launch.sh sweep experiments/sweep_optimizers.py --workdir runs [--parallel 2] [--slurm]
  ./launch.sh sweep experiments/sweep_optimizers.py --workdir runs --list     # the 21 runs
  ./launch.sh tensorboard runs/gpt2_optimizers

Twenty-one runs of the README's first command (600 steps of 32 x 128 tokens, its warmup;
4-9 minutes each at --parallel 2 on 2 CPU cores, 73 minutes in all, measured), a learning-rate grid
per optimizer around its usual range (Lion's a decade lower, Chen et al. 2023: its sign update
is larger), widened upwards for Muon, Lion and schedule-free AdamW, whose best rate fell on the
first grid's upper edge. Every run logs eval/loss and eval/bits_per_byte; the table
(runs/gpt2_optimizers/results.md) has final and best of each, and the README's optimizer table
takes each optimizer's best learning rate by final eval loss. Schedule-free AdamW runs at a
constant rate after the same warmup (it needs no decay, and evaluates its averaged iterate).
"""

from transformer.sweeps import grid

BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'gpt2_optimizers'
OVERRIDES = {'train.steps': 600, 'train.eval_every': 200, 'checkpoint.every': 600}
# optimizer -> (its schedule, its learning rates)
OPTIMIZERS = {
    'adamw': ('cosine', [1e-3, 3e-3, 1e-2]),
    'adamw_wsd': ('wsd', [1e-3, 3e-3, 1e-2]),
    'muon': ('cosine', [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    'lion': ('cosine', [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]),
    'schedule_free_adamw': ('constant', [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
}


def sweep():
  return [{'opt.optimizer': name.removesuffix('_wsd'), 'opt.schedule': schedule, **run}
          for name, (schedule, rates) in OPTIMIZERS.items()
          for run in grid({'opt.learning_rate': rates})]
