"""Memory of a compiled train step: XLA's memory analysis and the logits-sized arrays it writes.

Used by experiments/benchmark.py for its memory columns (see its docstring): `step_memory(run,
compiled)` gives memory_*_bytes, logits_bytes and logits_sized_buffers, read from the compiled
step's memory analysis and its HLO text; `device_peak_bytes()` the allocator's high-water mark
on GPUs.
"""

import math
import re

import jax

from transformer.monitoring import compiled as compiled_lib


def step_memory(run, compiled):
  """The benchmark's memory fields of the compiled train step of `run` (a setup.Run)."""
  out = {**memory_bytes(compiled), 'logits_bytes': logits_bytes(run)}
  out['logits_sized_buffers'] = [f'{n} {s}' for n, s in logits_sized_buffers(
      compiled.as_text(), out['logits_bytes'] // 4)]
  return out


def memory_bytes(compiled):
  """Per-device bytes from XLA's memory analysis of the compiled step (None where unknown)."""
  mem = compiled_lib.memory(compiled)
  if mem is None:
    return {'memory_bytes': None}
  out = {f'memory_{name}_bytes': getattr(mem, name)
         for name in ('argument', 'output', 'temp', 'alias')}
  out['memory_bytes'] = mem.total
  return out


def logits_bytes(run):
  """Bytes of one float32 logits array of the train step: [B, scored positions, V] (MLM scores
  its masked positions only; an encoder-decoder its targets)."""
  c = run.config
  length = getattr(run.objective, 'max_predictions', None) or (
      c.data.targets_len or c.data.seq_len if c.model.family == 'encoder_decoder' else
      c.data.seq_len)
  return int(c.train.batch_size * length * c.model.vocab_size * 4)


_NOT_A_BUFFER = ('parameter', 'bitcast', 'get-tuple-element', 'tuple', 'constant')


def logits_sized_buffers(hlo_text, elements):
  """The arrays of exactly `elements` elements the compiled step writes out: instructions of
  the computations XLA runs (the entry, loop bodies), not of the fused ones (a fusion's
  insides stay in registers) and not aliases (parameters, bitcasts, tuple elements), nor a
  scatter into one of the listed arrays (XLA updates its operand in place: the cross-entropy
  gradient's label entries; the step's temporaries did not grow with it). With `elements` =
  one logits array ([B, L, V] in any shape), [(name, shape)] lists the logits and their
  gradient."""
  fused = set(re.findall(r' fusion\(.*?calls=(%[\w.-]+)', hlo_text))
  out, current = [], None
  for line in hlo_text.splitlines():
    head = re.match(r'(?:ENTRY )?(%[\w.-]+) .*\{$', line)
    if head:
      current = head.group(1)
      continue
    inst = re.match(r'\s*(?:ROOT )?(%[\w.-]+) = \w+\[([\d,]*)\]\S* ([\w-]+)\((%[\w.-]+)?', line)
    if not inst or current in fused or inst.group(3) in _NOT_A_BUFFER:
      continue
    shape = [int(d) for d in inst.group(2).split(',') if d]
    in_place = 'scatter' in inst.group(1) and inst.group(4) in {name for name, _ in out}
    if shape and math.prod(shape) == elements and not in_place:
      out.append((inst.group(1), shape))
  return out


def device_peak_bytes():
  """The allocator's peak bytes in use on device 0 (GPUs), else None."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # backends without allocator stats
    return None
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None
