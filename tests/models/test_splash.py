"""Splash attention (models/splash.py) against the XLA path, on CPU in Pallas interpret mode.

Every mask the kernel builds: causal, bidirectional, prefix LM, cross attention, each over
packed rows (several examples per row, segment ids, padding at the end), with grouped KV heads;
forward outputs and gradients (d/dq, d/dk, d/dv of a weighted sum over real tokens), in float32
and bfloat16. Compared at real (non-padding) query positions only: there splash's padding rule
differs (padding attends to padding) and no loss reads those outputs.

Tolerances (atol = rtol): float32 forward 5e-6, gradients 2e-5 (measured: at most 1.0e-6 and
2.9e-6; the online softmax sums in another order); bfloat16 (inputs and outputs bf16, softmax in
float32 in both) forward 2e-2, gradients 3e-2 (measured: 1.6e-2, one bf16 step at values of 2-4).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.errors import ConfigError
from transformer.models import attention

TOL = {'float32': (5e-6, 2e-5), 'bfloat16': (2e-2, 3e-2)}
T, S, N, K, H = 128, 256, 4, 2, 32


def _segments(length, cuts, seed):
  """A packed row: examples ending at `cuts`, padding after the last."""
  seg, pos, start = np.zeros(length, np.int32), np.zeros(length, np.int32), 0
  for i, end in enumerate(cuts):
    seg[start:end], pos[start:end] = i + 1, np.arange(end - start)
    start = end
  prefix = (pos < 1 + (np.arange(length) * 7 + seed) % 9) & (seg > 0)
  return seg, pos, prefix.astype(np.int32)


def _structure(kind):
  """(Structure, q length, kv length) of one mask kind over a batch of 2 packed rows."""
  rows = [_segments(T, (40, 90, 120), 0), _segments(T, (70, 128), 3)]
  seg, pos, prefix = (jnp.asarray(np.stack(a)) for a in zip(*rows))
  if kind == 'cross':   # decoder rows over encoder rows of the same examples, longer
    kv = [_segments(S, (100, 180, 230), 0), _segments(S, (150, 256), 3)]
    kv_seg, kv_pos, _ = (jnp.asarray(np.stack(a)) for a in zip(*kv))
    return attention.Structure(seg, kv_seg, pos, kv_pos, False), T, S
  causal = kind != 'bidirectional'
  pre = prefix if kind == 'prefix' else None
  return attention.Structure(seg, seg, pos, pos, causal, pre, pre), T, T


def _inputs(t, s, dtype):
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (2, t, N, H), dtype)
  k = jax.random.normal(keys[1], (2, s, K, H), dtype)
  v = jax.random.normal(keys[2], (2, s, K, H), dtype)
  w = jax.random.normal(keys[3], (2, t, N, H), jnp.float32)
  return q, k, v, w


def _run(impl, st, q, k, v):
  mask = attention.attention_mask(*st[:4], causal=st.causal, q_prefix=st.q_prefix,
                                   kv_prefix=st.kv_prefix)
  return attention.attend(q, k, v, mask, scale=H ** -0.5, implementation=impl, structure=st)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('kind', ['causal', 'bidirectional', 'prefix', 'cross'])
def test_splash_equals_xla_forward_and_gradients(kind, dtype):
  st, t, s = _structure(kind)
  q, k, v, w = _inputs(t, s, jnp.dtype(dtype))
  real = (st.q_segment_ids != 0)[:, :, None, None]

  def loss(impl, q, k, v):
    out = _run(impl, st, q, k, v)
    return jnp.sum(jnp.where(real, out.astype(jnp.float32) * w, 0.0)), out
  grads = {impl: jax.jit(jax.grad(lambda *a, i=impl: loss(i, *a), argnums=(0, 1, 2),
                                  has_aux=True))(q, k, v) for impl in ('splash', 'xla')}
  fwd, grad = TOL[dtype]
  (gs, out_s), (gx, out_x) = grads['splash'], grads['xla']
  assert out_s.dtype == q.dtype
  keep = np.asarray(real[..., 0, 0])
  np.testing.assert_allclose(np.asarray(out_s, np.float32)[keep],
                             np.asarray(out_x, np.float32)[keep], atol=fwd, rtol=fwd)
  for a, b in zip(gs, gx):
    assert not np.isnan(np.asarray(a, np.float32)).any()
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               atol=grad, rtol=grad)


def test_splash_refuses_lengths_it_cannot_tile():
  st, _, _ = _structure('causal')
  q = jnp.zeros((2, 100, N, H))
  st = attention.Structure(*(x[:, :100] for x in st[:4]), True)
  with pytest.raises(ValueError, match='sequence length 100'):
    _run('splash', st, q, q[:, :, :K], q[:, :, :K])


FACTS = dict(dtype='bfloat16', head_dim=64, lengths=(1024,))


def test_auto_takes_splash_on_tpu_where_it_can_run_and_says_why_not_elsewhere():
  assert attention.choose('auto', platform='tpu', **FACTS) == ('splash', 'auto on tpu')
  assert attention.choose('auto', platform='cpu', **FACTS) == ('xla',
                                                               'auto: no fused kernel on cpu')
  impl, why = attention.choose('auto', platform='tpu', **FACTS, bias=True)
  assert impl == 'xla' and "T5's relative-position bias" in why
  impl, why = attention.choose('auto', platform='tpu', **FACTS, dropout=True)
  assert impl == 'xla' and 'attention dropout > 0' in why
  impl, why = attention.choose('auto', platform='tpu', dtype='float32', head_dim=64,
                               lengths=(1000,))
  assert impl == 'xla' and 'sequence length 1000' in why


def test_explicit_splash_that_cannot_run_is_one_line_naming_the_key():
  with pytest.raises(ConfigError) as e:
    attention.choose('splash', platform='tpu', **FACTS, bias=True)
  assert str(e.value).startswith("`model.attention_impl=splash`: T5's relative-position bias")
  assert '\n' not in str(e.value)
  assert attention.choose('splash', platform='cpu', **FACTS)[1] == (
      'set (Pallas interpret mode: not a TPU)')
