"""Sizes that fit: plan every named size on a TPU slice and write the README's fit table + JSON.

  python experiments/benchmark_plan.py --out plan_sizes.json [--sizes gpt2.py:small,bert.py:base]
      [--topology v5e-8] [--remat none,dots,full]

For each size (at its config's sequence lengths, bfloat16, FSDP over the slice) it compiles the
train step under each listed remat policy through plan mode's own core
(`transformer.training.planning.plan`, what `./launch.sh plan` runs) and keeps the first policy
that fits, with its per-chip memory and the roofline MFU. Every figure is a compiler reading or
an ESTIMATE of plan mode, not a measurement on hardware. Compiles take minutes each on a small
host; run it alone.

A size whose data source cannot be prepared here (WMT for transformer.py on an offline host) is
planned with an embedded stand-in of the same fields (STAND_IN): the compiled step depends only
on the config's shapes (batch, lengths, the model's own vocabulary), which stay the config's;
the row says so.
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import argparse
import json
import time

from transformer import config as config_lib
from transformer.errors import ConfigError
from transformer.training import planning, topologies

SIZES = ('gpt2.py:small', 'gpt2.py:medium', 'gpt2.py:large', 'bert.py:base', 'bert.py:large',
         't5.py:small', 't5.py:base', 't5.py:large', 'bart.py:base', 'bart.py:large',
         'transformer.py:base', 'transformer.py:big')
BASE = {'model.dtype': 'bfloat16', 'mesh.preset': 'fsdp', 'mesh.shape': '(1,-1,1)'}
GiB = 2 ** 30
STAND_IN = {'seq2seq': 'python_stdlib/docstrings', 'causal_lm': 'python_stdlib/text',
            'mlm': 'python_stdlib/text', 'span_corruption': 'python_stdlib/text'}


def _plan(spec, overrides, devices, chip):
  """(config, plan report, the stand-in source or '') of one compile."""
  config = config_lib.load(f'configs/{spec}', overrides)
  try:
    return config, planning.plan(config, 'runs', devices, chip), ''
  except ConfigError as e:
    if 'data.source' not in str(e) or config.objective not in STAND_IN:
      raise
  stand_in = STAND_IN[config.objective]
  config = config_lib.load(f'configs/{spec}', {**overrides, 'data.source': stand_in})
  return config, planning.plan(config, 'runs', devices, chip), stand_in


def plan_size(spec, slice_, devices, policies):
  """{size, slice, remat, fits, per-chip GiB, temporaries GiB, est. MFU, tried} of one size."""
  tried = []
  for remat in policies:
    t0 = time.perf_counter()
    config, report, stand_in = _plan(spec, {**BASE, 'model.remat': remat}, devices, slice_.chip)
    tried.append({'remat': remat, 'fits': report.fits, 'total_gib': report.total / GiB,
                  'data_stand_in': stand_in,
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
    size = r['size'] + (f' (data: {r["data_stand_in"]} stand-in)' if r.get('data_stand_in')
                        else '')
    lines.append(f'| {size} | {r["slice"]} | {r["batch"]} x {length} | {r["remat"]} | '
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
