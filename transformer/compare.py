"""`python -m transformer.compare FILE ...` (`./launch.sh compare FILE ...`): an architecture x
objective comparison (transformer/comparisons/plan.py says what a declaration holds).

  ./launch.sh compare experiments/compare_t5_table2.py --workdir runs [--seeds 3]
      [--finetune_seeds 1] [--scale tiny|small|base] [--parallel K] [--results]
      [--allow_mismatch] [--budget flops|steps] [--flops matmul|6n|6n_attn] [--list] [--slurm]
      [--phase all|pretrain|finetune] [--index I] [--tasks A,B] [--deterministic]
      [--lr_grid] [--corpus embedded|TFDS_NAME] [--config.a.b=v ...]

--deterministic adds --xla_gpu_deterministic_ops=true to XLA_FLAGS for every run (GPU
reductions in a fixed order: slower, repeatable); manifest.json records the flags in effect.
--corpus replaces the scale's pretraining corpus (SCALES' 'corpus': the tiny scale reads the
embedded text, small and base the TFDS corpus c4/en, which must be prepared on disk first).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import signal
import sys

from transformer import cli
from transformer.comparisons import results as compare_results
from transformer.comparisons import manifest, slurm
from transformer.comparisons.budget import BUDGETS, FLOP_CONVENTIONS, match_budget
from transformer.comparisons.plan import SCALE_NAMES, execute, finetune_runs, load
from transformer.errors import ConfigError


def _parser():
  parser = cli.Parser('python -m transformer.compare', __doc__, config=False)
  parser.add_argument('compare_file')
  parser.add_argument('--seeds', type=int, default=3, help='runs of every cell (default 3)')
  parser.add_argument('--finetune_seeds', type=int, default=1,
                      help='fine-tuning runs of every pretraining run (nested seeds; default 1)')
  parser.add_argument('--scale', default='tiny', help=f'one of {", ".join(SCALE_NAMES)} '
                      '(the declaration\'s SCALES)')
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time')
  parser.add_argument('--results', action='store_true', help='only rebuild the tables and plot')
  parser.add_argument('--allow_mismatch', action='store_true',
                      help='run cells whose pretraining budget is >10%% off their declared cost')
  parser.add_argument('--budget', default='flops', choices=BUDGETS,
                      help='what every cell is matched in: training FLOPs x its cost (default) '
                      'or steps (T5\'s protocol)')
  parser.add_argument('--flops', default='matmul', choices=FLOP_CONVENTIONS,
                      help='FLOP convention: matmul (3 x forward matmuls incl. the logits, '
                      'default), 6n (Kaplan 6N), 6n_attn (6N + attention, PaLM)')
  parser.add_argument('--list', action='store_true', help='print the plan and exit')
  parser.add_argument('--slurm', action='store_true', help='write sbatch arrays for both phases')
  parser.add_argument('--phase', default='all', choices=('all', 'pretrain', 'finetune'))
  parser.add_argument('--tasks', default='',
                      help='comma list: only these of the declaration\'s TASKS (default all)')
  parser.add_argument('--deterministic', action='store_true',
                      help='XLA deterministic GPU ops in every run (XLA_FLAGS; manifest.json)')
  parser.add_argument('--lr_grid', action='store_true',
                      help='choose each cell\'s learning rates from the declaration\'s LR_GRID '
                      'on dev data first (transformer/comparisons/lr_grid.py)')
  parser.add_argument('--corpus', default='',
                      help='pretrain every cell on this: embedded (the stdlib text) or a TFDS '
                      'name such as c4/en (default: the scale\'s declared corpus)')
  parser.add_argument('--index', type=int, default=None,
                      help='run only run I of --phase (one Slurm array task)')
  return parser


@cli.main
def main(argv=None):
  args, overrides = _parser().parse(argv)
  if args.index is not None and args.phase == 'all':
    raise ConfigError('--index: give --phase pretrain or --phase finetune with it')
  if args.lr_grid and (args.slurm or args.index is not None):
    raise ConfigError('--lr_grid: the learning-rate grid runs locally, not as Slurm arrays; run '
                      'without --slurm/--index, or pin opt.learning_rate per cell')
  if args.deterministic:
    manifest.deterministic()
  plan = load(args.compare_file, args.scale, args.seeds, args.workdir, overrides,
              args.finetune_seeds, budget=args.budget, flops=args.flops,
              tasks=[t for t in args.tasks.split(',') if t], tune_lr=args.lr_grid,
              corpus=args.corpus)
  budget = match_budget(plan, args.allow_mismatch)
  for line in plan.warnings:
    print(line)
  nested = f' x {plan.finetune_seeds} fine-tuning seeds' if plan.finetune_seeds > 1 else ''
  print(f'[compare] {plan.module.EXPERIMENT} at scale {plan.scale}: {len(plan.cells)} cells x '
        f'{plan.seeds} seeds{nested}, {compare_results.budget_line(plan, budget)}; '
        f'pretraining corpus {plan.corpus}')
  if args.list or args.slurm:
    finetune_runs(plan)
    if args.slurm:
      return slurm.write(plan, args)
    print(compare_results.describe(plan))
    return 0
  outcome = {}
  if not args.results:
    try:
      outcome = execute(plan, args)
    except KeyboardInterrupt:
      print('error: comparison interrupted; run the same command to resume it', file=sys.stderr)
      return 130
  if args.index is None:
    finetune_runs(plan)
    print(compare_results.write(plan))
  failed = sorted(n for n, s in outcome.items() if s in ('failed', 'interrupted'))
  if failed:
    print(f'error: {len(failed)} run(s) failed: {", ".join(failed)}; see <run>/train.log',
          file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  cli.exit_process(main())
