"""What a compiled program holds, read from XLA's own reports: memory per device, collectives.

  memory(compiled)         -> Memory: argument, output, aliased and temporary bytes per device
  collectives(hlo_text)    -> [Collective]: every collective the program runs, with its bytes
  out_of_memory(message)   -> {'temp' (or 'used'), 'limit'} bytes of a compiler's refusal, or None

A collective inside a loop (the scan over layers, gradient accumulation) runs once per
iteration, so each is counted with the product of the trip counts of the loops around it: the
trip count is read from the loop's condition (`counter < N`). XLA's cost analysis counts a
loop body once; these counts do not. Bytes are per device: the result of an all-reduce, an
all-gather, an all-to-all or a collective-permute, the input of a reduce-scatter (its result
times the group size). Between TPU slices (multi-slice, DCN) a collective is a `send` the
megascale runtime carries; it is listed as e.g. 'all-reduce over DCN'.
"""

import dataclasses
import math
import re

KINDS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
                'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_HEAD = re.compile(r'^(ENTRY )?(%[\w.\-]+) .*\{$')
_INST = re.compile(r'^\s*(?:ROOT )?(%[\w.\-]+) = (.*?) ([\w\-]+)\((.*)$')
_ARRAY = re.compile(r'\b([a-z]\w*)\[([\d,]*)\]')
_CALLED = re.compile(r'\b(calls|to_apply|body|condition|branch_computations|'
                     r'called_computations)=(\{[^}]*\}|%[\w.\-]+)')


@dataclasses.dataclass(frozen=True)
class Memory:
  argument: int
  output: int
  alias: int
  temp: int

  @property
  def total(self):
    """Bytes a device holds at the step's peak: arguments, outputs not aliased to a donated
    argument, and temporaries (XLA's own sum)."""
    return self.argument + self.output - self.alias + self.temp


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str                    # one of KINDS
  name: str                    # the HLO instruction
  bytes: int                   # per device, one execution
  count: int                   # executions per run of the program (loop trip counts multiplied)
  shape: str                   # the result type as the HLO writes it (first array)
  op: str                      # the jax operation it came from (metadata op_name), '' if none


def memory(compiled):
  """Memory of a compiled program per device (None where the backend does not report it)."""
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return Memory(*(int(getattr(mem, f'{n}_size_in_bytes')) for n in
                  ('argument', 'output', 'alias', 'temp')))


def _array_bytes(type_text):
  sizes = [_DTYPE_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(',') if d)
           for dtype, dims in _ARRAY.findall(type_text)]
  return sizes


def _group_size(rest):
  """Devices in one replica group of a collective's attribute text."""
  m = re.search(r'replica_groups=\{\{([\d,]*)\}', rest)
  if m:
    return len(m.group(1).split(','))
  m = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", rest)
  if m:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m.group(2)))
  m = re.search(r'replica_groups=\[([\d,]+)\]', rest)   # iota groups [groups, size]<=[n]
  return int(m.group(1).split(',')[-1]) if m else 1


def _computations(hlo_text):
  """{name: [instruction lines]} and the entry computation's name."""
  comps, current, entry = {}, None, None
  for line in hlo_text.splitlines():
    head = _HEAD.match(line)
    if head:
      current = head.group(2)
      comps[current] = []
      entry = current if head.group(1) else entry
    elif line.startswith('}'):
      current = None
    elif current is not None:
      comps[current].append(line)
  return comps, entry


def _trip_count(lines):
  """N of a loop condition `counter < N` (1 when it reads otherwise)."""
  constants = dict(re.findall(r'(%[\w.\-]+) = s32\[\]\S* constant\((\d+)\)', '\n'.join(lines)))
  for line in lines:
    m = re.search(r'compare\((%[\w.\-]+), (%[\w.\-]+)\), direction=LT', line)
    if m and m.group(2) in constants:
      return int(constants[m.group(2)])
  return 1


def _multiplicities(comps, entry):
  """{computation: times it runs per run of the entry}: loop bodies times their trip counts."""
  times, order = {entry: 1}, [entry]
  for name in order:
    for line in comps.get(name, ()):
      inst = _INST.match(line)
      trips = 1
      if inst and inst.group(3) == 'while':
        cond = re.search(r'condition=(%[\w.\-]+)', line)
        trips = _trip_count(comps.get(cond.group(1), ())) if cond else 1
      for how, group in _CALLED.findall(line):
        for callee in re.findall(r'%[\w.\-]+', group):
          if callee in comps and callee not in times:
            times[callee] = times[name] * (trips if how == 'body' else 1)
            order.append(callee)
  return times


def collectives(hlo_text):
  """Every collective instruction of a compiled module's text (`compiled.as_text()`)."""
  comps, entry = _computations(hlo_text)
  times = _multiplicities(comps, entry) if entry else {}
  out = []
  for name, lines in comps.items():
    for line in lines:
      inst = _INST.match(line)
      if not inst:
        continue
      op = inst.group(3)
      kind = op[:-len('-start')] if op.endswith('-start') else op
      dcn = re.search(r'_xla_megascale_transfer_type="(\w+)"', inst.group(4))
      if op == 'send' and dcn:   # between slices: a host transfer the megascale runtime runs
        kind = dcn.group(1).lower().replace('_', '-') + ' over DCN'
      elif kind not in KINDS:
        continue
      sizes = _array_bytes(inst.group(2))
      size = max(sizes, default=0) if op.endswith('-start') else sum(sizes)
      if kind == 'reduce-scatter':
        size *= _group_size(inst.group(4))
      where = re.search(r'op_name="([^"]*)"', inst.group(4))
      first = _ARRAY.search(inst.group(2))
      out.append(Collective(kind=kind, name=inst.group(1), bytes=size,
                            count=times.get(name, 1), shape=first.group(0) if first else '',
                            op=where.group(1) if where else ''))
  return out


def by_kind(found):
  """{kind: (executions, bytes per device)} summed over a `collectives` list, in KINDS order."""
  out = {}
  for c in found:
    n, b = out.get(c.kind, (0, 0))
    out[c.kind] = (n + c.count, b + c.count * c.bytes)
  return {k: out[k] for k in sorted(out, key=lambda k: (k not in KINDS, KINDS.index(k)
                                                         if k in KINDS else 0, k))}


_UNITS = {'': 1, 'B': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


def _bytes(number, unit):
  return int(float(number) * _UNITS[unit.upper()[:1] if unit else ''])


def out_of_memory(message):
  """What XLA's out-of-memory refusal says: {'temp', 'limit'} bytes from 'the total memory
  required for HLO temporaries (24.81G) exceeds available HBM (15.75G)', or {'used', 'limit'}
  from 'Used X of Y hbm'; None for any other error."""
  num = r'([\d.]+)([KMGT]?)i?B?'
  m = re.search(rf'HLO temporaries \({num}\) exceeds available HBM \({num}\)', message)
  if m:
    return {'temp': _bytes(m.group(1), m.group(2)), 'limit': _bytes(m.group(3), m.group(4))}
  m = re.search(rf'Used {num} of {num} hbm', message)
  if m:
    return {'used': _bytes(m.group(1), m.group(2)), 'limit': _bytes(m.group(3), m.group(4))}
  return None
