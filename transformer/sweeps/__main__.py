"""`python -m transformer.sweeps FILE ...` (`./launch.sh sweep FILE ...`): run, list, collect or
write a Slurm array for the runs of a sweep file (see transformer.sweeps.runner)."""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import os
import shlex
import signal
import sys

from transformer import cli
from transformer.errors import ConfigError
from transformer.sweeps.results import markdown, write_results
from transformer.sweeps.runner import Sweep, run
from transformer.sweeps.slurm import slurm_script


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.sweeps', __doc__, config=False)
  parser.add_argument('sweep_file')
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time')
  parser.add_argument('--max_runs', type=int, default=None, help='start at most N runs')
  parser.add_argument('--index', type=int, default=None, help='run only run I (Slurm task)')
  parser.add_argument('--slurm', action='store_true', help='write an sbatch array script')
  parser.add_argument('--list', action='store_true', help='print the runs and exit')
  parser.add_argument('--results', action='store_true', help='only collect results')
  args, overrides = parser.parse(argv)   # --config.KEY=VALUE: applied to every run
  sweep = Sweep(args.sweep_file, overrides)
  if args.index is not None and not 0 <= args.index < len(sweep.runs):
    raise ConfigError(f'--index {args.index}: the sweep has runs 0..{len(sweep.runs) - 1}')
  exp_dir = os.path.join(args.workdir, sweep.experiment)
  if args.list:
    for i, r in enumerate(sweep.runs):
      print(f'{i}: {r["name"]}  ' + shlex.join(sweep.command(r, args.workdir)[3:]))
    return 0
  if args.slurm:
    return _write_slurm(sweep, args, exp_dir)
  outcome = {}
  if not args.results:
    try:
      outcome = run(sweep, args.workdir, parallel=args.parallel, max_runs=args.max_runs,
                    index=args.index)
    except KeyboardInterrupt:
      print('error: sweep interrupted; run the same command to resume it', file=sys.stderr)
      return 130
  if args.index is None:
    rows = write_results(sweep, args.workdir)
    print(markdown(rows, sweep.swept_keys))
    print(f'Results in {exp_dir}/results.csv, results.md, eval_loss.png')
  failed = [n for n, s in outcome.items() if s in ('failed', 'interrupted')]
  if failed:
    print(f'error: {len(failed)} run(s) failed: {", ".join(failed)}; see <run>/train.log',
          file=sys.stderr)
  return 1 if failed else 0


def _write_slurm(sweep, args, exp_dir):
  os.makedirs(exp_dir, exist_ok=True)
  path = os.path.join(exp_dir, 'sweep.sbatch')
  with open(path, 'w') as f:
    f.write(slurm_script(sweep, args.workdir, parallel=args.parallel if args.parallel > 1
                         else None))
  print(open(path).read())
  print(f'Wrote {path}; submit it with: sbatch {path}')
  return 0


if __name__ == '__main__':
  # SIGTERM (e.g. a preempted job) stops the runs like Ctrl-C: each saves, then the runner exits.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  sys.exit(main())
