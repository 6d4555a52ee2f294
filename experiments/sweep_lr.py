"""Learning rate x depth for the tiny GPT-2 on the embedded corpus: an example sweep.

  ./launch.sh sweep experiments/sweep_lr.py --workdir runs [--parallel 2] [--slurm]
  ./launch.sh tensorboard runs/gpt2_lr

Six runs of 300 steps (a few minutes each on 2 CPU cores); the table and the eval-loss plot land
in runs/gpt2_lr/results.md and eval_loss.png. Any --config.KEY=VALUE applies to every run.
"""

from transformer.sweeps import grid

BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'gpt2_lr'
OVERRIDES = {'train.steps': 300, 'train.batch_size': 16, 'train.eval_every': 100,
             'opt.warmup_steps': 30, 'checkpoint.every': 100}


def sweep():
  return grid({'opt.learning_rate': [1e-3, 3e-3, 1e-2], 'model.num_layers': [2, 4]})
