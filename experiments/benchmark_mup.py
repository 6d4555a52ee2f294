"""Does a learning rate tuned at width 64 hold at width 256? Eval loss against opt.learning_rate
per width, with the default parametrization and with muP (model.mup_base_width=64).

  python experiments/benchmark_mup.py [--widths 64,256] [--lrs 1e-3,...] [--steps 120]
      [--out docs/mup_transfer.json] [--png docs/mup_transfer.png] [--config.KEY=VALUE ...]

Every run is the real train step (setup.prepare, Trainer.compile) of configs/gpt2.py:tiny cut to
--layers layers, 4 heads, d_ff = 4 x width, on the embedded corpus (batch --batch_size x
--seq_len, AdamW, cosine after a 10% warmup), then --eval_batches eval batches. At the base width
muP is the default model exactly (tests/models/test_mup.py), so the base width's runs serve both
panels. A run whose loss is not finite is recorded as diverged (NaN). Reported per width and
setting: the best learning rate and its loss; the figure marks them.
"""

import math
import os
import sys
import time

import jax
import numpy as np

from experiments import benchmark_output
from transformer import cli
from transformer import config as config_lib
from transformer.training import evaluation, setup, sharding

DEFAULT_LRS = '2.5e-4,5e-4,1e-3,2e-3,4e-3,8e-3'


def parse_args(argv):
  p = cli.Parser('python -m experiments.benchmark_mup', __doc__, config=False, workdir=False)
  p.add_argument('--widths', default='64,256')
  p.add_argument('--base', type=int, default=64, help='model.mup_base_width of the muP runs')
  p.add_argument('--lrs', default=DEFAULT_LRS)
  p.add_argument('--layers', type=int, default=2)
  p.add_argument('--steps', type=int, default=120)
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--seq_len', type=int, default=64)
  p.add_argument('--eval_batches', type=int, default=4)
  p.add_argument('--out', default='', help='JSON of every run')
  p.add_argument('--png', default='', help='the figure')
  overrides, rest = cli.split_overrides(argv)
  args = p.parse_args(rest)
  args.widths = [int(w) for w in args.widths.split(',')]
  args.lrs = [float(x) for x in args.lrs.split(',')]
  return args, overrides


def train_one(args, overrides, width, lr, base):
  """{'eval_loss', 'train_loss', 'seconds'} of one run."""
  config = config_lib.load('configs/gpt2.py:tiny', {
      'model.d_model': width, 'model.num_heads': 4, 'model.d_ff': 4 * width,
      'model.num_layers': args.layers, 'model.mup_base_width': base,
      'opt.learning_rate': lr, 'opt.warmup_steps': max(args.steps // 10, 1),
      'train.steps': args.steps, 'train.batch_size': args.batch_size,
      'data.seq_len': args.seq_len, 'train.eval_steps': args.eval_batches,
      'mesh.shape': (1, 1, 1), **overrides})
  t0 = time.process_time()
  run = setup.prepare(config, 'unused')
  trainer = run.trainer
  state = trainer.init_state()
  it = run.pipeline('train').iterator(0)
  first = sharding.global_batch(next(it), run.mesh, trainer.input_sharding)
  step_fn = trainer.compile(state, first)
  batch, losses = first, []
  for _ in range(args.steps):
    state, metrics = step_fn(state, batch)
    losses.append(metrics['loss'])
    batch = sharding.global_batch(next(it), run.mesh, trainer.input_sharding)
  train = [float(s) / max(float(c), 1) for s, c in jax.device_get(losses[-10:])]
  scalars, _ = evaluation.evaluate(run, state['params'], run.pipeline('eval'),
                                   trainer.eval_fn())
  loss = scalars.get('loss', math.nan)
  return {'eval_loss': loss if math.isfinite(loss) else math.nan,
          'train_loss': float(np.mean(train)) if all(map(math.isfinite, train)) else math.nan,
          'seconds': time.process_time() - t0}


def best(rows):
  """(lr, loss) of the lowest finite eval loss among `rows`, or (None, None)."""
  done = [r for r in rows if math.isfinite(r['eval_loss'])]
  if not done:
    return None, None
  top = min(done, key=lambda r: r['eval_loss'])
  return top['lr'], top['eval_loss']


def run(args, overrides):
  rows = []
  for width in args.widths:
    for setting in ('default', 'mup'):
      if setting == 'mup' and width == args.base:   # the same model: copy the default's runs
        rows += [{**r, 'setting': 'mup'} for r in rows
                 if r['width'] == width and r['setting'] == 'default']
        continue
      for lr in args.lrs:
        row = {'width': width, 'setting': setting, 'lr': lr,
               **train_one(args, overrides, width, lr, args.base if setting == 'mup' else 0)}
        rows.append(row)
        print(f'width {width:4d} {setting:7s} lr {lr:.1e}: eval loss {row["eval_loss"]:.4f} '
              f'({row["seconds"]:.0f} s CPU)', file=sys.stderr)
  optima = {f'{s}/{w}': dict(zip(('lr', 'eval_loss'), best(
      [r for r in rows if r['width'] == w and r['setting'] == s])))
            for s in ('default', 'mup') for w in args.widths}
  return {'rows': rows, 'optima': optima, 'base': args.base, 'steps': args.steps,
          'layers': args.layers, 'batch_size': args.batch_size, 'seq_len': args.seq_len,
          'cpu_seconds': sum(r['seconds'] for r in rows), 'overrides': overrides}


def plot(result, path):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(10, 4))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2, sharey=True)
  widths = sorted({r['width'] for r in result['rows']})
  for ax, setting, title in zip(axes, ('default', 'mup'),
                                ('default parametrization', f'muP (base width {result["base"]})')):
    for width in widths:
      rows = sorted((r for r in result['rows'] if r['width'] == width and r['setting'] == setting),
                    key=lambda r: r['lr'])
      line, = ax.plot([r['lr'] for r in rows], [r['eval_loss'] for r in rows], marker='o',
                      label=f'width {width}')
      lr, loss = result['optima'][f'{setting}/{width}'].values()
      if lr is not None:
        ax.plot([lr], [loss], marker='*', markersize=14, color=line.get_color())
    ax.set_xscale('log', base=2)
    ax.set_xlabel('opt.learning_rate')
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(f'eval loss after {result["steps"]} steps')
  axes[1].legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)


def main(argv=None):
  args, overrides = parse_args(sys.argv[1:] if argv is None else list(argv))
  result = run(args, overrides)
  for key, value in result['optima'].items():
    print(f'{key:12s} best lr {value["lr"]}  eval loss {value["eval_loss"]}')
  print(f'{result["cpu_seconds"]:.0f} s CPU in all')
  if args.out:
    benchmark_output.write_json(args.out, result)
  if args.png:
    plot(result, args.png)
  return 0


if __name__ == '__main__':
  sys.exit(main())
