"""Throughput: peak matmul rates for model-FLOPs utilisation (MFU), token counts of a batch, and
the meter the training loop reports tokens/s, steps/s and MFU with.

Peaks on accelerators: a table of published dense peaks. CPU (and anything unknown): the rate measured
here with a large float32 matmul, so MFU on a laptop is meaningful rather than ~0.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from transformer.data import packing

# Dense (non-sparse) peak FLOP/s per device, by substring of jax's device_kind, and dtype.
PEAKS = {
    'H200': {'bfloat16': 989e12, 'float32': 67e12},
    'H100': {'bfloat16': 989e12, 'float32': 67e12},
    'A100': {'bfloat16': 312e12, 'float32': 19.5e12},
    'TPU v5p': {'bfloat16': 459e12},
    'TPU v5 lite': {'bfloat16': 197e12},
    'TPU v4': {'bfloat16': 275e12},
}


def measured_matmul_flops(dtype='float32', n=1024, repeats=5):
  """FLOP/s of an n x n matmul on the default device (best of `repeats`)."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def peak_flops(dtype='float32'):
  """(FLOP/s per device, a name saying where it came from)."""
  kind = jax.devices()[0].device_kind
  for name, peaks in PEAKS.items():
    if name.lower() in kind.lower() and str(dtype) in peaks:
      return peaks[str(dtype)], f'{name} {dtype} dense peak'
  return measured_matmul_flops(dtype), f'measured {dtype} matmul on {kind}'


def tokens_in(batch, streams=None):
  """Non-padding tokens (segment id != 0) of a host batch, summed over `streams` (None: all)."""
  return int(sum(np.count_nonzero(v) for k, v in batch.items() if k.endswith('_segment_ids') and
                 (streams is None or k[:-len('_segment_ids')] in streams)))


def output_stream(batch):
  """The stream FLOPs are counted per token of: 'targets' when present, else 'inputs'."""
  return 'targets' if 'targets_segment_ids' in batch else 'inputs'


class Throughput:
  """Tokens, output tokens, token slots and steps since the last report, and the rates they
  make; `perf/packing_efficiency` is the window's non-padding share of the slots.

  `add(batch)` after each step; `report(...)` returns the perf scalars of the window (with
  'perf/packing_efficiency', the share of slots that hold a token) and starts a new one. `sum_fn`
  turns this process's counts into the job's (a collective in multi-process runs).
  `restart_clock()` leaves time spent elsewhere (eval) out of the window.

  Batches without token streams (images) are counted by `count(batch) -> (examples, positions,
  position slots)` (the objective's), named `units` = (examples, positions), e.g. ('images',
  'patches'): the window then also reports perf/images_per_sec and perf/patches_per_sec, and
  perf/tokens_per_sec counts the positions (a ViT's tokens are its patches).
  """

  def __init__(self, step, count=None, units=None):
    self.step, self.count, self.units = step, count, units
    self.tokens = self.outputs = self.slots = self.examples = 0
    self.start = time.perf_counter()

  def add(self, batch):
    if self.count is not None:
      examples, positions, slots = self.count(batch)
      self.examples += examples
      self.tokens += positions
      self.outputs += positions
      self.slots += slots
      return
    self.tokens += tokens_in(batch)
    self.outputs += tokens_in(batch, (output_stream(batch),))
    self.slots += packing.efficiency(batch)[1]

  def restart_clock(self):
    self.start = time.perf_counter()

  def report(self, step, *, peak, flops_per_token, sum_fn):
    """(perf scalars of the window up to `step`, the job's tokens in it); starts a new window."""
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    tokens, outputs, slots, examples = sum_fn(self.tokens, self.outputs, self.slots,
                                              self.examples)
    tflops = outputs * flops_per_token / elapsed / jax.device_count() / 1e12
    scalars = {'perf/tokens_per_sec': tokens / elapsed,
               'perf/steps_per_sec': (step - self.step) / elapsed,
               'perf/tflops_per_device': tflops, 'perf/mfu': tflops * 1e12 / peak,
               'perf/packing_efficiency': tokens / max(slots, 1)}
    if self.units:
      scalars[f'perf/{self.units[0]}_per_sec'] = examples / elapsed
      scalars[f'perf/{self.units[1]}_per_sec'] = tokens / elapsed
    self.__init__(step, self.count, self.units)
    return scalars, tokens
