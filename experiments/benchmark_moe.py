"""Dense against mixture of experts at the same active FLOPs and step count (issue 27 item 4).

  python experiments/benchmark_moe.py [--steps 300] [--capacity_factor 1.25] [--aux_loss 0.01] \
      [--workdir /tmp/moe_bench] [--out moe.json]

Two tiny decoders (configs/gpt2.py:tiny narrowed: 2 layers, d_model 64, seq_len 64, batch 16)
train on the embedded corpus (python_stdlib/text) through the train entry point's loop with the
same data, seed and steps: 'dense' with d_ff 256, and 'moe' with 8 experts of d_ff 128, top-2,
in both layers (capacity factor 1.25, the Switch load-balancing loss at 0.01 (--aux_loss) and
the router z-loss at 0.001). Top-2 of 128-wide experts is the dense model's 256-wide MLP in active FLOPs
(the router adds 2 d E per token; both figures are printed, from monitoring/accounting.py).

Prints and writes (JSON) each run's final eval loss, parameters (total and active), training
FLOPs per token, wall time, and for the MoE run every logged window's per-layer expert loads
(as a multiple of the uniform share 1/8), the dropped-token share and the aux loss; `balanced`
says whether every expert stayed within 2x of uniform (0.5 to 2) in every window after the
first, `final_window` the last window's loads.
"""

import argparse
import json
import re
import shutil
import sys
import time

from transformer import config as config_lib
from transformer.monitoring import accounting, events
from transformer.training import hooks, loop, setup

BASE = {'model.num_layers': 2, 'model.d_model': 64, 'model.num_heads': 4, 'model.max_len': 64,
        'data.seq_len': 64, 'train.batch_size': 16, 'opt.warmup_steps': 30,
        'opt.learning_rate': 3e-3, 'train.log_every': 25, 'train.eval_steps': 8,
        'log.samples': 0, 'log.attention_images': False, 'log.attention_stats': False}
RUNS = {
    'dense': {'model.d_ff': 256},
    'moe': {'model.d_ff': 128, 'model.moe_experts': 8, 'model.moe_top_k': 2,
            'model.moe_capacity_factor': 1.25},
}
EXPERTS = 8


def _config(name, steps, capacity_factor, aux_loss=0.01):
  values = {**BASE, **RUNS[name], 'train.steps': steps, 'train.eval_every': steps,
            'run_name': name}
  if name == 'moe':
    values['model.moe_capacity_factor'] = capacity_factor
    values['model.moe_aux_loss'] = aux_loss
  return config_lib.load('configs/gpt2.py:tiny', {k: str(v) for k, v in values.items()})


def _loads(run_dir):
  """{step: {'layer<i>': [load of each expert x E]}} and the dropped / aux scalars by step."""
  scalars = events.read_events(run_dir)['scalars']
  loads = {}
  for tag, points in scalars.items():
    m = re.fullmatch(r'train/moe/load/decoder/layer(\d+)/expert(\d+)', tag)
    if m:
      for step, value in points:
        row = loads.setdefault(step, {}).setdefault(f'layer{m.group(1)}', [0.0] * EXPERTS)
        row[int(m.group(2))] = round(value * EXPERTS, 3)
  extra = {k: dict(scalars.get(f'train/moe/{k}', [])) for k in ('dropped', 'aux_loss')}
  return dict(sorted(loads.items())), extra


def run(name, steps, workdir, capacity_factor, aux_loss=0.01):
  config = _config(name, steps, capacity_factor, aux_loss)
  run_dir = setup.run_dir(config, workdir)
  shutil.rmtree(run_dir, ignore_errors=True)   # a fresh run, not a resumed one
  start = time.time()
  last = loop.train(config, workdir, hooks=[hooks.TensorBoard()])
  wall = time.time() - start
  counts = accounting.count_params(accounting.abstract_model(config))
  flops = accounting.flops_per_token(config)
  row = {'eval_loss': last['eval/loss'], 'train_loss': last['train/loss'],
         'params_total': counts['total'], 'params_active': counts.get('active', counts['total']),
         'train_flops_per_token': flops['total_train'], 'mlp_flops_per_token': flops['mlp'],
         'wall_seconds': round(wall, 1)}
  if name == 'moe':
    loads, extra = _loads(run_dir)
    later = [v for step, layers in list(loads.items())[1:] for row_ in layers.values()
             for v in row_]
    row.update(loads=loads, dropped=extra['dropped'], aux_loss=extra['aux_loss'],
               final_window=loads[max(loads)] if loads else {},
               load_range_after_first_window=[min(later), max(later)] if later else None,
               balanced=bool(later) and 0.5 <= min(later) and max(later) <= 2.0)
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--workdir', default='/tmp/benchmark_moe')
  parser.add_argument('--out', default='benchmark_moe.json')
  parser.add_argument('--capacity_factor', type=float, default=1.25,
                      help='model.moe_capacity_factor of the MoE run (0: dropless)')
  parser.add_argument('--aux_loss', type=float, default=0.01,
                      help='model.moe_aux_loss of the MoE run (Switch: 0.01)')
  args = parser.parse_args(argv)
  results = {name: run(name, args.steps, args.workdir, args.capacity_factor, args.aux_loss)
             for name in RUNS}
  results['capacity_factor'], results['aux_loss'] = args.capacity_factor, args.aux_loss
  dense, moe = results['dense'], results['moe']
  results['steps'] = args.steps
  results['moe_beats_dense'] = moe['eval_loss'] < dense['eval_loss']
  for name in RUNS:
    r = results[name]
    print(f'{name:>5}: eval loss {r["eval_loss"]:.4f}  train loss {r["train_loss"]:.4f}  params '
          f'{r["params_total"]:,} (active {r["params_active"]:,})  train FLOPs/token '
          f'{r["train_flops_per_token"]:,.0f}  {r["wall_seconds"]}s')
  print(f'moe final window loads (x uniform): {moe["final_window"]}; range after the first '
        f'window {moe["load_range_after_first_window"]}; within 2x: {moe["balanced"]}; '
        f'dropped share last window {list(moe["dropped"].values())[-1:]}')
  with open(args.out, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
