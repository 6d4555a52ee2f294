"""Peak matmul rates for model-FLOPs utilisation (MFU).

Accelerators: a table of published dense peaks. CPU (and anything unknown): the rate measured
here with a large float32 matmul, so MFU on a laptop is meaningful rather than ~0.
"""

import time

import jax
import jax.numpy as jnp

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
