"""`python -m transformer.glue` (`./launch.sh glue`): fine-tune a pretrained model on every GLUE
task with the papers' recipe and write the GLUE table (transformer/comparisons/glue.py says how).

  ./launch.sh glue --init_from RUN_OR_IMPORT [--tasks cola,mrpc,...] [--workdir runs]
      [--experiment glue] [--lrs 2e-5,3e-5,5e-5] [--epochs 3] [--batch_size 32]
      [--source_dir DIR] [--parallel K] [--list] [--results] [--config.a.b=v ...]

--source_dir reads DIR/<task>.jsonl files of {"text", "text_pair", "label"} instead of TFDS;
--list prints the runs; --results only rebuilds the table from the runs' event files.
Writes <workdir>/<experiment>/glue.md, glue.csv and glue_table/ (a TensorBoard text summary).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import json
import os
import shlex
import sys

from transformer import cli
from transformer import config as config_lib
from transformer import evaluate
from transformer.comparisons import glue, glue_table
from transformer.errors import ConfigError
from transformer.sweeps import runner


def _parser():
  parser = cli.Parser('python -m transformer.glue', __doc__, config=False)
  parser.add_argument('--init_from', required=True,
                      help='the pretrained run directory or import-hf output')
  parser.add_argument('--tasks', default='', help='comma list (default: all nine)')
  parser.add_argument('--experiment', default='glue')
  parser.add_argument('--lrs', default='', help='comma list (default: the family\'s grid)')
  parser.add_argument('--epochs', type=float, default=3.0)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--source_dir', default='', help='DIR/<task>.jsonl instead of TFDS')
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time')
  parser.add_argument('--list', action='store_true', help='print the runs and exit')
  parser.add_argument('--results', action='store_true', help='only rebuild the table')
  return parser


def _floats(text, flag):
  try:
    return tuple(float(x) for x in text.split(',') if x.strip())
  except ValueError:
    raise ConfigError(f'{flag} {text}: give numbers separated by commas, e.g. 2e-5,3e-5') from None


def mismatched(plan, workdir):
  """MNLI's validation_mismatched accuracy of the chosen run (TFDS only), saved beside it."""
  if 'mnli' not in plan.tasks or plan.source_dir:
    return
  lr, _ = glue_table.best_lr(plan, 'mnli')
  if lr is None:
    return
  run = next(r for r in glue.sweep(plan).runs if r['name'] == plan.run_name('mnli', lr))
  path = os.path.join(plan.exp_dir, run['name'], glue_table.MISMATCHED_FILE)
  if os.path.exists(path):
    return
  config = config_lib.load(run['config'], {**run['overrides'],
                                           'data.eval_split': glue.MISMATCHED})
  metrics = evaluate.run(config, workdir)
  with open(path, 'w') as f:
    json.dump(metrics, f)


@cli.main
def main(argv=None):
  args, overrides = _parser().parse(sys.argv[1:] if argv is None else argv)
  plan = glue.load(args.init_from, args.workdir, experiment=args.experiment,
                   tasks=[t for t in args.tasks.split(',') if t],
                   lrs=_floats(args.lrs, '--lrs'), epochs=args.epochs,
                   batch_size=args.batch_size, source_dir=args.source_dir, extra=overrides)
  sweep = glue.sweep(plan)
  if args.list:
    for i, r in enumerate(sweep.runs):
      print(f'{i}: {r["name"]}  ' + shlex.join(sweep.command(r, args.workdir)[3:]))
    return 0
  if not args.results:
    print(f'[glue] {plan.family} from {plan.init_from}: {len(plan.tasks)} task(s) x '
          f'{len(plan.lrs)} learning rate(s)')
    runner.run(sweep, args.workdir, parallel=args.parallel)
    mismatched(plan, args.workdir)
  rows = glue_table.choose(plan)
  md_path, csv_path = glue_table.write(plan, rows)
  with open(md_path) as f:
    print(f.read())
  print(f'[glue] wrote {md_path}, {csv_path} and {os.path.join(plan.exp_dir, glue_table.TABLE_DIR)}')
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
