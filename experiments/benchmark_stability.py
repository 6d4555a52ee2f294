"""What `log.stability` costs: the train step's time with the diagnostics off and on.

  python experiments/benchmark_stability.py [--family decoder] [--size tiny] [--rounds 15]
      [--steps 5] [--out stability.json] [--config.KEY=VALUE ...]

One family config (experiments/benchmark_configs.py: on CPU batch 2 x 128 unless given), one
batch from the real pipeline, two trainers that differ only in log.stability, both compiled in
this process. The rounds alternate (off, on, off, on, ...), each timing --steps steps with
benchmark.time_steps (median seconds per step), so load on a shared machine hits both alike;
reported: the median over rounds of each setting's step time and their ratio (on / off), and
how many statistics one step returns.
"""

import statistics
import sys

from experiments import benchmark_output
from experiments.benchmark import time_steps
from experiments.benchmark_configs import FAMILIES, family_config
from transformer import cli
from transformer.training import setup, sharding


def parse_args(argv):
  p = cli.Parser('python -m experiments.benchmark_stability', __doc__, config=False,
                 workdir=False)
  p.add_argument('--family', default='decoder', choices=tuple(FAMILIES))
  p.add_argument('--size', default='tiny')
  p.add_argument('--rounds', type=int, default=15, help='alternations of off and on')
  p.add_argument('--steps', type=int, default=5, help='timed steps per round')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per setting first')
  p.add_argument('--batch_size', type=int, default=None)
  p.add_argument('--seq_len', type=int, default=None)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--out', default='', help='write the result here as JSON')
  overrides, rest = cli.split_overrides(argv)
  return p.parse_args(rest), overrides


def _compiled(args, overrides, on):
  """(step_fn, state, batch, statistics per step) of the config with log.stability=`on`."""
  _, config = family_config(args.family, args.size, args, 'data',
                            {**overrides, 'log.stability': on})
  run = setup.prepare(config, 'unused')
  state = run.trainer.init_state()
  batch = sharding.global_batch(next(run.pipeline('train').iterator(0)), run.mesh)
  step_fn = run.trainer.compile(state, batch)
  state, metrics = step_fn(state, batch)
  stats = sum(k.startswith('stability/') for k in metrics)
  return step_fn, state, batch, stats


def run(args, overrides):
  settings = {on: list(_compiled(args, overrides, on)) for on in (False, True)}
  times = {False: [], True: []}
  for on, (step_fn, state, batch, _) in settings.items():
    settings[on][1] = time_steps(step_fn, state, batch, args.warmup, 1)[1]
  for _ in range(args.rounds):
    for on in (False, True):
      step_fn, state, batch, _ = settings[on]
      seconds, settings[on][1] = time_steps(step_fn, state, batch, 0, args.steps)
      times[on].append(seconds)
  off, on = statistics.median(times[False]), statistics.median(times[True])
  return {'family': args.family, 'size': args.size, 'rounds': args.rounds, 'steps': args.steps,
          'step_s_off': off, 'step_s_on': on, 'ratio': on / off,
          'statistics_per_step': settings[True][3], 'round_times_off': times[False],
          'round_times_on': times[True], 'overrides': overrides}


def main(argv=None):
  args, overrides = parse_args(sys.argv[1:] if argv is None else list(argv))
  result = run(args, overrides)
  print(f'{args.family}:{args.size}  log.stability off {result["step_s_off"] * 1e3:.1f} ms/step, '
        f'on {result["step_s_on"] * 1e3:.1f} ms/step, ratio {result["ratio"]:.3f} '
        f'({result["statistics_per_step"]} statistics per step; median of {args.rounds} '
        f'alternating rounds of {args.steps} steps)')
  if args.out:
    benchmark_output.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
