"""`python -m transformer.sweep FILE ...` (`./launch.sh sweep FILE ...`): run, list, collect or
write a Slurm array for the runs of a sweep file (`sweep()`, see transformer.sweeps.runner) or
the trials of a search file (`search()`, see transformer.sweeps.search and .worker)."""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import os
import shlex
import signal
import sys

from transformer import cli
from transformer.errors import ConfigError
from transformer.sweeps.results import markdown, write_results
from transformer.sweeps.runner import Sweep, load_module, run
from transformer.sweeps.slurm import search_slurm_script, slurm_script


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.sweep', __doc__, config=False)
  parser.add_argument('sweep_file')
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time')
  parser.add_argument('--max_runs', type=int, default=None, help='start at most N runs')
  parser.add_argument('--index', type=int, default=None, help='run only run I (Slurm task)')
  parser.add_argument('--slurm', action='store_true', help='write an sbatch array script')
  parser.add_argument('--list', action='store_true', help='print the runs and exit')
  parser.add_argument('--results', action='store_true', help='only collect results')
  parser.add_argument('--storage', default=None,
                      help='search: the study\'s SQLAlchemy URL (default: sqlite:///'
                      '<workdir>/<experiment>/study.db)')
  parser.add_argument('--heartbeat', type=int, default=10,
                      help='search: seconds between heartbeats; a trial silent for 3x is retried')
  args, overrides = parser.parse(argv)   # --config.KEY=VALUE: applied to every run
  module = load_module(args.sweep_file, wanted=('sweep', 'search'))
  if hasattr(module, 'search'):
    return _search(module, args, overrides)
  if args.storage:
    raise ConfigError(f'--storage: {args.sweep_file} declares sweep(), not search()')
  sweep = Sweep(args.sweep_file, overrides, module=module)
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


def _search(module, args, overrides):
  """The search file's trials: list, Slurm array of workers, run this worker, results."""
  # pylint: disable=import-outside-toplevel
  from transformer.sweeps import search_results
  from transformer.sweeps.search import Search
  from transformer.sweeps.worker import Worker
  if hasattr(module, 'sweep'):
    raise ConfigError(f'sweep file {args.sweep_file}: define sweep() or search(), not both')
  if args.index is not None:
    raise ConfigError('--index: a search has no fixed runs; every worker (or Slurm array task) '
                      'pulls the next trial from the study')
  if args.heartbeat < 1 or args.parallel < 1:
    raise ConfigError(f'--heartbeat {args.heartbeat} --parallel {args.parallel}: give positive '
                      'numbers (seconds; trials at a time)')
  search = Search(args.sweep_file, module, overrides, storage=args.storage)
  exp_dir = os.path.join(args.workdir, search.experiment)
  if args.list:
    print(search_results.describe(search, args.workdir))
    return 0
  if args.slurm:
    return _write_slurm(search, args, exp_dir, search_slurm_script(search, args.workdir,
                                                                   tasks=args.parallel))
  outcome = {}
  if not args.results:
    try:
      outcome = Worker(search, args.workdir, parallel=args.parallel, max_runs=args.max_runs,
                       heartbeat=args.heartbeat).run()
    except KeyboardInterrupt:
      print('error: search interrupted; its running trials are queued again: run the same '
            'command to resume it', file=sys.stderr)
      return 130
  _, text = search_results.write(search, search.open(args.workdir, create=False), args.workdir)
  print(f'{text}\nResults in {exp_dir}/: results.csv, results.md, eval_loss.png, '
        f'{", ".join(search_results.PLOTS)}')
  failed = [n for n, s in outcome.items() if s == 'failed']
  if failed:
    print(f'error: {len(failed)} trial(s) failed: {", ".join(map(str, failed))}; see '
          '<run>/train.log', file=sys.stderr)
  return 1 if failed else 0


def _write_slurm(sweep, args, exp_dir, script=None):
  os.makedirs(exp_dir, exist_ok=True)
  path = os.path.join(exp_dir, 'sweep.sbatch')
  with open(path, 'w') as f:
    f.write(script or slurm_script(sweep, args.workdir, parallel=args.parallel
                                   if args.parallel > 1 else None))
  print(open(path).read())
  print(f'Wrote {path}; submit it with: sbatch {path}')
  return 0


if __name__ == '__main__':
  # SIGTERM (e.g. a preempted job) stops the runs like Ctrl-C: each saves, then the runner exits.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  cli.exit_process(main())
