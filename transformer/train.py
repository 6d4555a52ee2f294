"""The training entry point: `python -m transformer.train --config configs/gpt2.py:tiny --workdir runs`.

(`./launch.sh train ...`.) The work is `transformer.training.loop.train`; this module parses the
command line, joins the multi-process job when there is one, composes the loop's hooks (a search
trial's, then TensorBoard, the console, the profiler) and turns errors into one line.
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import sys

from transformer import cli
from transformer.sweeps.trial import TrialHook
from transformer.training import distributed, hooks
from transformer.training.loop import train


@cli.main
def main(argv=None):
  args, config = cli.parse(sys.argv[1:] if argv is None else argv,
                           extra_flags=('dry_run', 'show_sharding'))
  distributed.initialize()  # before any device is touched; no-op for a single process
  # A search trial reports first: its search/pruned joins the eval scalars TensorBoard writes.
  train(config, args.workdir, hooks=[TrialHook.from_environment(), *hooks.standard()],
        dry_run=args.dry_run, show_sharding=args.show_sharding)
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
