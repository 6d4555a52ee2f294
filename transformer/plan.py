"""Plan a run for a TPU slice from any host: `./launch.sh plan --config C --topology v5e-8`.

  python -m transformer.plan --config configs/gpt2.py:medium --topology v5e-8 [--config.k=v ...]
      [--num_slices 2] [--eval] [--try model.remat=none,dots,full train.batch_size=16,32]

Compiles the run's own train step (the setup, rules and state layout of training) ahead of time
for the slice's topology (libtpu, requirements-plan.txt) and prints per chip: parameters +
optimizer state, temporaries and the total against HBM (XLA's memory analysis), step FLOPs
(our accounting), a roofline step time and MFU (ESTIMATES, formula printed) and the collectives
the compiled step runs. `--try` compiles every combination of the listed values and prints one
line each; the first combination is the baseline, and when it does not fit the last line names
its overshoot and the listed change of fewest keys that fits. `--num_slices N` compiles for N
slices joined over DCN (the data axis spans them). `--topology local` compiles for this host's
devices (a GPU host: deviceless GPU compilation is not supported by jax). Nothing is written.
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import itertools

from transformer import cli
from transformer import config as config_lib
from transformer.errors import ConfigError
from transformer.training import plan_text, planning, topologies


def parse_tries(tries):
  """['model.remat=none,dots'] -> (keys, [value tuples]) of every combination, in listed order."""
  keys, choices = [], []
  for item in tries:
    key, eq, values = item.partition('=')
    if not eq or not values or key in keys:
      raise ConfigError(f'`--try {item}`: write KEY=V1,V2,... with each key once, e.g. '
                        '--try model.remat=none,dots,full train.batch_size=16,32')
    keys.append(key)
    choices.append(values.split(','))
  return keys, list(itertools.product(*choices))


def _parser():
  parser = cli.Parser('python -m transformer.plan', __doc__, config_required=True,
                      workdir=False)
  parser.add_argument('--topology', required=True,
                      help='a TPU slice (v5e-8, v5litepod-16, v5p-8, v6e-4, v4-8, ...) or local')
  parser.add_argument('--num_slices', type=int, default=1, help='slices joined over DCN')
  parser.add_argument('--try', dest='tries', nargs='+', action='extend', default=[],
                      metavar='KEY=V1,V2', help='compile every combination of these values')
  parser.add_argument('--eval', action='store_true', help='also compile the eval step')
  return parser


@cli.main
def main(argv=None):
  args, overrides = _parser().parse(argv)
  keys, combos = parse_tries(args.tries)
  configs = [config_lib.load(args.config, {**overrides, **dict(zip(keys, values))})
             for values in combos]   # every bad key or value stops here, before compiling
  if args.topology == 'local':
    slice_, devices = topologies.local()
  else:
    slice_ = topologies.get(args.topology)
    devices = topologies.devices(slice_, args.num_slices)
  rows = []
  for values, config in zip(combos, configs):
    report = planning.plan(config, 'runs', devices, slice_.chip, eval_step=args.eval)
    rows.append((values, report))
    if not keys:
      _print_one(args, slice_, report, config)
  if keys:
    print(plan_text.header(args.config, slice_, args.num_slices, rows[0][1],
                           configs[0].mesh.preset))
    print('\n'.join(plan_text.try_table(keys, rows)))
    print(plan_text.smallest_change(keys, rows))
  return 0


def _print_one(args, slice_, report, config):
  print(plan_text.header(args.config, slice_, args.num_slices, report, config.mesh.preset))
  print(f'train step compiled in {report.compile_s:.1f} s')
  blocks = [plan_text.memory_table(report), plan_text.roofline(report, config.model.dtype),
            plan_text.collectives_table(report)]
  print('\n\n'.join('\n'.join(b) for b in blocks))
  line = plan_text.verdict(report)
  print(line + '; list changes to compare with --try, e.g. --try model.remat=dots,full'
        if line else f'fits: {report.total / 2 ** 30:.2f} of {report.hbm / 2 ** 30:.2f} GiB '
        'per chip')


if __name__ == '__main__':
  cli.exit_process(main())
