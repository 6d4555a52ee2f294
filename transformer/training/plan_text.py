"""Plan mode's text: the per-chip table of one configuration, the table of `--try` combinations,
and the fit verdict (planning.py computes every figure; this module only prints them).

Every figure that is not the compiler's own reading says ESTIMATE, with its formula.
"""

from transformer.monitoring import compiled as compiled_lib

GiB = 2 ** 30


def size(n):
  """'13.15 GiB' / '12.3 MiB' / '512 B'."""
  for unit, scale in (('GiB', GiB), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
    if n >= scale:
      return f'{n / scale:.2f} {unit}'
  return f'{n} B'


def seconds(s):
  return f'{s:.2f} s' if s >= 1 else f'{s * 1e3:.2f} ms' if s >= 1e-3 else f'{s * 1e6:.1f} us'


def _hbm(report):
  return f'{report.hbm / GiB:.2f} GiB HBM' if report.hbm else 'no HBM limit known'


def header(name, slice_, num_slices, report, preset):
  chip = slice_.chip
  slices = f'{num_slices} x ' if num_slices > 1 else ''
  figures = (f'{chip.hbm_bytes / GiB:.0f} GiB HBM, {chip.peak_bf16 / 1e12:.0f} TFLOP/s bf16, '
             f'{chip.hbm_bandwidth / 1e9:.0f} GB/s' if chip.hbm_bandwidth else
             f'{chip.peak_bf16 / 1e12:.1f} TFLOP/s peak')
  impl, why = report.attention
  return (f'plan   {name} on {slices}{slice_.name} ({slice_.chips * num_slices} x '
          f'{chip.generation}: {figures} per chip); mesh {dict(report.mesh.shape)}, preset '
          f'{preset!r}; attention {impl} ({why})')


def memory_table(report):
  """Per chip: parameters + optimizer state, temporaries, the total against HBM."""
  row = lambda name, n: f'  {name:<48}{size(n):>12}'
  lines = ['per chip (XLA memory analysis of the compiled train step)',
           row('parameters + optimizer state', report.state)]
  if report.memory is not None:
    m = report.memory
    lines += [row('temporaries', m.temp),
              row('arguments + outputs - donated (state, batch)', m.total - m.temp)]
  else:
    lines.append(row('temporaries (the compiler refused: out of memory)', report.temp))
  lines.append(row('total', report.total) + f'  of {_hbm(report)}: '
               f'{"fits" if report.fits else "DOES NOT FIT"}')
  if report.eval_total is not None:
    lines.append(row('eval step total', report.eval_total))
  return lines


def roofline(report, dtype):
  """The ESTIMATE block: FLOPs, bytes, roofline step time and MFU, each with its formula."""
  chips = report.chips
  lines = ['step: ESTIMATES (roofline from our accounting, not a measurement)',
           f'  FLOPs         {report.flops:.3e} per step, {report.flops / chips:.3e} per chip '
           '(monitoring/accounting: 3 x forward matmul FLOPs x tokens)',
           f'  bytes moved   {size(report.bytes_moved)} per chip (3 x weights read + '
           '2 x (parameters + optimizer state) + 2 x activations kept)']
  if report.bandwidth:
    redo = ' x 4/3 (remat=full)' if report.recompute != 1 else ''
    lines.append(f'  step time     max(FLOPs/chip{redo} / peak, bytes/chip / HBM bandwidth) = '
                 f'max({seconds(report.compute_s)}, {seconds(report.memory_s)}) = '
                 f'{seconds(report.roofline_s)}')
  else:
    lines.append(f'  step time     FLOPs/chip / peak = {seconds(report.compute_s)} '
                 '(no bandwidth figure for this device)')
  note = '' if dtype == 'bfloat16' else f'; the model computes in {dtype}, below the bf16 peak'
  lines.append(f'  MFU           (FLOPs/chip / peak) / step time = {report.mfu:.0%} '
               f'(an upper bound{note})')
  return lines


def collectives_table(report, top=5):
  """Collectives per step by kind, and the largest few with the operation they came from."""
  kinds = compiled_lib.by_kind(report.collectives)
  if report.refused:
    return ['collectives: unknown (the compiler refused the step before writing it)']
  if not kinds:
    return ['collectives: none in the compiled step']
  lines = ['collectives per step (compiled HLO, loop trip counts included)',
           f'  {"kind":<20}{"runs":>8}{"per chip":>14}']
  lines += [f'  {kind:<20}{n:>8}{size(b):>14}' for kind, (n, b) in kinds.items()]
  biggest = sorted(report.collectives, key=lambda c: -c.bytes * c.count)[:top]
  lines.append('  largest:')
  lines += [f'    {c.kind} {c.shape} x{c.count}  {c.op or c.name}' for c in biggest]
  return lines


def verdict(report, label=''):
  """'' when it fits; else one line with the overshoot."""
  if report.fits:
    return ''
  limit = report.refused['limit'] if report.refused else report.hbm
  return (f'{label}does not fit: {report.total / GiB:.2f} GiB per chip, '
          f'{(report.total - limit) / GiB:.2f} GiB over the {limit / GiB:.2f} GiB '
          f'{"the compiler allows" if report.refused else "of HBM"}')


def try_table(keys, rows):
  """One line per combination: its values, memory, fit and the estimates."""
  head = [*keys, 'total/chip', 'temporaries', 'fits', 'est. step', 'est. MFU']
  table = [head] + [[*map(str, values), size(r.total), '-' if r.temp is None else size(r.temp),
                     'yes' if r.fits else 'NO', seconds(r.roofline_s), f'{r.mfu:.0%}']
                    for values, r in rows]
  widths = [max(len(row[i]) for row in table) for i in range(len(head))]
  return ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]


def smallest_change(keys, rows):
  """The first row's verdict and the fitting row that changes fewest of its values."""
  (base, report), fitting = rows[0], [(v, r) for v, r in rows if r.fits]
  if report.fits:
    return f'{_assign(keys, base)}: fits'
  line = verdict(report, f'{_assign(keys, base)} ')
  if not fitting:
    return line + '; no listed combination fits (try model.remat=full, a smaller ' \
                  'train.batch_size or a larger slice)'
  changed = lambda v: sum(a != b for a, b in zip(v, base))
  values, best = min(fitting, key=lambda vr: changed(vr[0]))
  diff = [(k, v) for k, v, b in zip(keys, values, base) if v != b]
  return (line + f'; smallest listed change that fits: {_assign(*zip(*diff))} '
          f'({best.total / GiB:.2f} GiB)')


def _assign(keys, values):
  return ' '.join(f'{k}={v}' for k, v in zip(keys, values))
