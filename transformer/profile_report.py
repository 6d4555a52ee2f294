"""Where a traced step's time goes: `python -m transformer.profile_report RUN_DIR [--top 15]`.

Reads the newest jax.profiler trace under RUN_DIR (a run traced with
`--config.log.profile_steps=START,COUNT`, or a `benchmark.py --profile` directory, or one
.xplane.pb) and prints the traced step's XLA op time by kind and its costliest ops
(`transformer.monitoring.op_profile` does the reading).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import sys

from transformer import cli
from transformer.monitoring import op_profile


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.profile_report', __doc__, config=False,
                      workdir=False)
  parser.add_argument('path', help='a run directory, a profile directory or an .xplane.pb file')
  parser.add_argument('--top', type=int, default=15, help='how many of the costliest ops to list')
  parser.add_argument('--module', default=None, help='the traced program to report (default: '
                      'the one with the most op time, the train step in a training run)')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  summary = op_profile.summarize(op_profile.op_events(op_profile.trace_file(args.path)),
                                 args.module)
  print(op_profile.markdown(summary, args.top))
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
