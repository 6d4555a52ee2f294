"""Where a traced step's time goes: XLA op time by kind, read from a `jax.profiler` trace.

`python -m transformer.profile_report RUN_DIR_OR_TRACE [--top 15]` (transformer/profile_report.py)
reads the newest `*.xplane.pb` under the path (what `--config.log.profile_steps` and
`experiments/benchmark.py --profile` write) and prints, per execution of the traced program
that spent the most time (the train step), the time of its XLA ops grouped by kind: matrix
products (dots, convolutions and the YNNPACK / XNNPACK / oneDNN / cuBLAS fusions around them),
copies and transposes, reductions, other fusions, and the rest; then its costliest ops. Times
are the wall time during which at least one op of that kind ran, so ops running side by side on
several threads count once. Control flow (while / conditional / call) is left out: the ops
inside it are counted where they run.
"""

import collections
import glob
import os

from transformer.errors import ConfigError

KINDS = ('matrix products', 'copies and transposes', 'reductions', 'other fusions', 'other ops')
_PRODUCTS = ('ynn_fusion', 'xnn_fusion', 'dot', 'convolution', 'onednn', 'cublas', 'cudnn',
             '__cublas')   # and any name with 'gemm' or 'matmul' in it
_CONTROL = ('while', 'conditional', 'call')


def kind(op):
  """The kind of the XLA op named `op` (an HLO instruction name such as 'ynn_fusion.3')."""
  name = op.lower()
  if name.startswith(_PRODUCTS) or 'gemm' in name or 'matmul' in name:
    return KINDS[0]
  if 'copy' in name or 'transpose' in name:
    return KINDS[1]
  if 'reduce' in name:
    return KINDS[2]
  if 'fusion' in name:
    return KINDS[3]
  return KINDS[4]


def trace_file(path):
  """`path` if it is an .xplane.pb, else the newest one under it; a one-line error if none."""
  if os.path.isfile(path) and path.endswith('.xplane.pb'):
    return path
  found = glob.glob(os.path.join(path, '**', '*.xplane.pb'), recursive=True)
  if not found:
    raise ConfigError(f'no jax.profiler trace (*.xplane.pb) under {path}: trace a run with '
                      f'--config.log.profile_steps=START,COUNT or benchmark.py --profile DIR')
  return max(found, key=os.path.getmtime)


def op_events(xplane):
  """[(module, run_id, op name, start_ns, end_ns)] of every XLA op in the trace file."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  out = []
  for plane in ProfileData.from_file(xplane).planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        op = stats.get('hlo_op')
        if op is None or str(op).startswith(_CONTROL):
          continue
        out.append((str(stats.get('hlo_module', '')), stats.get('run_id'), str(op),
                    event.start_ns, event.end_ns))
  return out


def _covered(intervals):
  """Total length of the union of (start, end) intervals."""
  total, end = 0.0, None
  for s, e in sorted(intervals):
    if end is None or s > end:
      total, end = total + (e - s), e
    elif e > end:
      total, end = total + (e - end), e
  return total


def summarize(events, module=None):
  """Seconds per execution of `module` (default: the program with the most op time) by kind,
  with its executions, wall time covered by its ops and each op's seconds per execution."""
  per_module = collections.Counter()
  for m, _, _, s, e in events:
    per_module[m] += e - s
  if not per_module:
    raise ConfigError('the trace holds no XLA op: was anything run while it was recorded?')
  module = module or per_module.most_common(1)[0][0]
  mine = [ev for ev in events if ev[0] == module]
  runs = max(len({ev[1] for ev in mine}), 1)
  by_kind = {k: _covered([(s, e) for _, _, op, s, e in mine if kind(op) == k]) / runs / 1e9
             for k in KINDS}
  ops = collections.Counter()
  for _, _, op, s, e in mine:
    ops[op] += (e - s) / runs / 1e9
  return {'module': module, 'executions': runs, 'by_kind': by_kind,
          'ops_s': _covered([(s, e) for *_, s, e in mine]) / runs / 1e9, 'op_s': dict(ops)}


def markdown(summary, top=15):
  total = summary['ops_s']
  lines = [f'### {summary["module"]}: {1e3 * total:.1f} ms of XLA ops per execution '
           f'({summary["executions"]} traced; kinds that ran side by side on several threads '
           f'overlap, so shares can add up to more than 100%)', '',
           '| kind | ms per execution | share |',
           '|---|---|---|']
  for k, s in summary['by_kind'].items():
    lines.append(f'| {k} | {1e3 * s:.1f} | {100 * s / max(total, 1e-12):.0f}% |')
  lines += ['', '| op | kind | ms per execution |', '|---|---|---|']
  for op, s in sorted(summary['op_s'].items(), key=lambda kv: -kv[1])[:top]:
    lines.append(f'| {op} | {kind(op)} | {1e3 * s:.2f} |')
  return '\n'.join(lines)
