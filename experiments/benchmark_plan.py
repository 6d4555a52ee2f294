"""Sizes that fit: plan every named size on a TPU slice and write the README's fit table + JSON.

  python experiments/benchmark_plan.py --out plan_sizes.json [--sizes gpt2.py:small,bert.py:base]
      [--topology v5e-8] [--remat none,dots,full]

For each size (at its config's sequence lengths, bfloat16, FSDP over the slice) it compiles the
train step under each listed remat policy through plan mode's own core
(`transformer.training.planning.plan`, what `./launch.sh plan` runs) and keeps the first policy
that fits, with its per-chip memory and the roofline MFU. Every figure is a compiler reading or
an ESTIMATE of plan mode, not a measurement on hardware. Compiles take minutes each on a small
host; run it alone.
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import argparse
import json
import time

from transformer import config as config_lib
from transformer.training import planning, topologies

SIZES = ('gpt2.py:small', 'gpt2.py:medium', 'gpt2.py:large', 'bert.py:base', 'bert.py:large',
         't5.py:small', 't5.py:base', 't5.py:large', 'bart.py:base', 'bart.py:large',
         'transformer.py:base', 'transformer.py:big')
BASE = {'model.dtype': 'bfloat16', 'mesh.preset': 'fsdp', 'mesh.shape': '(1,-1,1)'}
GiB = 2 ** 30


def plan_size(spec, slice_, devices, policies):
  """{size, slice, remat, fits, per-chip GiB, temporaries GiB, est. MFU, tried} of one size."""
  tried = []
  for remat in policies:
    config = config_lib.load(f'configs/{spec}', {**BASE, 'model.remat': remat})
    t0 = time.perf_counter()
    report = planning.plan(config, 'runs', devices, slice_.chip)
    tried.append({'remat': remat, 'fits': report.fits, 'total_gib': report.total / GiB,
                  'temp_gib': (report.temp or 0) / GiB, 'est_mfu': report.mfu,
                  'attention': report.attention[0], 'seconds': time.perf_counter() - t0})
    if report.fits:
      break
  best = tried[-1]
  return {'size': spec, 'slice': slice_.name, 'batch': config.train.batch_size,
          'seq_len': config.data.seq_len, 'targets_len': config.data.targets_len, **best,
          'tried': tried}


def table(rows):
  lines = ['| size | slice | batch x length | remat | per chip (GiB) | fits | est. MFU |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    length = f'{r["seq_len"]}' + (f' / {r["targets_len"]}' if r['targets_len'] else '')
    lines.append(f'| {r["size"]} | {r["slice"]} | {r["batch"]} x {length} | {r["remat"]} | '
                 f'{r["total_gib"]:.2f} | {"yes" if r["fits"] else "no"} | {r["est_mfu"]:.0%} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default=','.join(SIZES))
  parser.add_argument('--topology', default='v5e-8')
  parser.add_argument('--remat', default='none,dots,full')
  parser.add_argument('--out', default='plan_sizes.json')
  args = parser.parse_args()
  slice_ = topologies.get(args.topology)
  devices = topologies.devices(slice_)
  rows = []
  for spec in args.sizes.split(','):
    rows.append(plan_size(spec, slice_, devices, args.remat.split(',')))
    print(table(rows[-1:]).splitlines()[-1], flush=True)
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=2)
  print(table(rows))


if __name__ == '__main__':
  main()
