"""Building blocks chosen by `config.model` fields: dense projections, embeddings, positions
(sinusoidal, learned, T5 relative bias, rotary), norms and MLPs.

Every parameter carries logical axis names ('embed', 'mlp', 'heads', 'kv', 'vocab', ...) as its
`out_sharding` metadata; the rules in `transformer/sharding.py` map them onto mesh axes.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@jax.custom_vjp
def gelu(x):
  """The exact (erf) GELU, x * Phi(x), with autodiff's gradient g * (Phi(x) + x * phi(x)) computed
  from x in the backward pass. Autodiff of `jax.nn.gelu` keeps erf's derivative exp(-x^2 / 2) as
  a residual, one more [rows, d_ff] array written per layer and read back: BERT's MLP at the
  speed issue's shape (4096 rows, 256 -> 1024) took 131 ms forward and backward on one core
  with it, 115 ms without."""
  return jax.nn.gelu(x, approximate=False)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  cdf = 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))
  pdf = jnp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
  return (g * (cdf + x * pdf).astype(g.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': gelu,
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'silu': jax.nn.silu,
}
# Gated variants (Shazeer 2020): act(x W0) * (x W1). geglu uses the tanh GELU, as T5 v1.1 does.
GATED = {'geglu': 'gelu_tanh', 'swiglu': 'silu', 'reglu': 'relu'}


def normal(std):
  return jax.nn.initializers.normal(stddev=std)


def logical_param(value, axes):
  """An nnx.Param tagged with logical axis names; sharded later by the trainer's rules."""
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


def param(rngs, shape, axes, std, dtype):
  """A logical_param drawn from N(0, std)."""
  return logical_param(normal(std)(rngs.params(), shape, dtype), axes)


class Dense(nnx.Module):
  """y = x . kernel (+ bias), contracting the trailing `in_shape` dims into `out_shape` dims.

  kernel has shape in_shape + out_shape (e.g. [embed, heads, kv] for a query projection).
  init_std None means fan-in scaling: std = 1 / sqrt(prod(in_shape)).
  """

  def __init__(self, in_shape, out_shape, axes, *, use_bias=True, init_std=0.02,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
    self.dtype = dtype
    std = 1.0 / math.sqrt(np.prod(self.in_shape)) if init_std is None else init_std
    self.kernel = param(rngs, self.in_shape + self.out_shape, axes, std, param_dtype)
    out_axes = axes[len(self.in_shape):]
    self.bias = (logical_param(jnp.zeros(self.out_shape, param_dtype), out_axes)
                 if use_bias else None)

  def __call__(self, x):
    y = dense_dot(x.astype(self.dtype), self.kernel.value.astype(self.dtype), len(self.in_shape))
    if self.bias is not None:
      y = y + self.bias.value.astype(self.dtype)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_dot(x, kernel, n_in):
  """x [..., *in] . kernel [*in, *out] -> [..., *out], contracting x's trailing `n_in` dims.

  The gradients are autodiff's; the VJP only orders the kernel's as one 2-D product over the
  flattened rows, [out, in] then transposed when in > out, behind a barrier that keeps XLA from
  folding it back. XLA:CPU runs the [in, out] order of a wide-in kernel (the MLP's output
  projection) at half the rate and copied the row-major gradient into [*out, rows] order first
  (benchmark.py --vs_torch: GPT-2 step 2.03 -> 1.75 s on one core with the tied-logits barrier).
  """
  dims = ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ()))
  return jax.lax.dot_general(x, kernel, dims)


def _dense_dot_fwd(x, kernel, n_in):
  return dense_dot(x, kernel, n_in), (x, kernel)


def _dense_dot_bwd(n_in, residuals, g):
  x, kernel = residuals
  n_out = kernel.ndim - n_in
  dx = jax.lax.dot_general(g, kernel, ((tuple(range(g.ndim - n_out, g.ndim)),
                                        tuple(range(n_in, kernel.ndim))), ((), ())))
  rows = math.prod(x.shape[:x.ndim - n_in])
  x2 = x.reshape(rows, -1)
  g2 = g.reshape(rows, -1)
  if x2.shape[1] > g2.shape[1]:   # the [out, in] product, then a transpose of the small result
    dk = jax.lax.optimization_barrier(jax.lax.dot_general(g2, x2, (((0,), (0,)), ((), ())))).T
  else:
    dk = jax.lax.optimization_barrier(jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ()))))
  return dx, dk.reshape(kernel.shape)


dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


class Embed(nnx.Module):
  """Token embedding table [vocab, embed]; `attend` gives tied output logits."""

  def __init__(self, vocab_size, d_model, *, init_std, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.embedding = param(rngs, (vocab_size, d_model), ('vocab', 'embed'), init_std, param_dtype)

  def __call__(self, ids):
    return jnp.take(self.embedding.value, ids, axis=0).astype(self.dtype)

  def attend(self, x_BLD, bias_V=None):
    """Tied logits [B, L, V]; with `bias_V` float32 logits + the bias (`biased_tied_logits`)."""
    x_BLD, table_VD = x_BLD.astype(self.dtype), self.embedding.value.astype(self.dtype)
    if bias_V is None:
      return tied_logits(x_BLD, table_VD)
    return biased_tied_logits(x_BLD, table_VD, bias_V.astype(jnp.float32))


def tied_logits(x_BLD, table_VD):
  """x . table^T: logits [B, L, V] through a tied embedding table [V, D], as `dense_dot` with the
  table as a [D, V] kernel, so the table's gradient is (x^T g)^T, a [D, V] product then a small
  transpose: XLA:CPU never copies the [B*L, V] logit gradient into [V, B*L] order (autodiff's
  order for 'bld,vd->blv' does, and that copy cost as much as a matmul)."""
  return dense_dot(x_BLD, table_VD.T, 1)


@jax.custom_vjp
def _add_bias(logits, bias_V):
  return logits + bias_V


def _add_bias_fwd(logits, bias_V):
  return _add_bias(logits, bias_V), None


def _add_bias_bwd(_, g):
  # The bias's gradient as a product with ones reads the gradient array the logits' products
  # read; a sum made XLA compute the gradient (and the softmax under it) once more inside the
  # reduction, with the exponentials written out for both.
  return g, jnp.ones((math.prod(g.shape[:-1]),), g.dtype) @ g.reshape(-1, g.shape[-1])


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def biased_tied_logits(x_BLD, table_VD, bias_V):
  """float32 (x . table^T) + bias (BERT's MLM decoder); autodiff's gradients."""
  return _add_bias(tied_logits(x_BLD, table_VD).astype(jnp.float32), bias_V)


class LayerNorm(nnx.Module):
  """LayerNorm (scale + bias) or RMSNorm (scale only, T5), computed in float32."""

  def __init__(self, dim, *, kind='layernorm', eps=1e-5, dtype=jnp.float32,
               param_dtype=jnp.float32):
    if kind not in ('layernorm', 'rmsnorm'):
      raise ValueError(f'model.norm={kind!r}; choose layernorm or rmsnorm')
    self.kind, self.eps, self.dtype = kind, eps, dtype
    self.scale = logical_param(jnp.ones((dim,), param_dtype), ('embed',))
    self.bias = (logical_param(jnp.zeros((dim,), param_dtype), ('embed',))
                 if kind == 'layernorm' else None)

  def __call__(self, x):
    x = x.astype(jnp.float32)
    if self.kind == 'layernorm':
      x = x - jnp.mean(x, axis=-1, keepdims=True)
    y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
    y = y * self.scale.value.astype(jnp.float32)
    if self.bias is not None:
      y = y + self.bias.value.astype(jnp.float32)
    return y.astype(self.dtype)


class MLP(nnx.Module):
  """Position-wise feed-forward: wi -> activation -> dropout -> wo (gated: wi_0, wi_1); the
  blocks pass dropout_rate 0 for models without this dropout (model.mlp_dropout=False)."""

  def __init__(self, d_model, d_ff, *, activation, use_bias, dropout_rate, init_std, dtype,
               param_dtype, rngs: nnx.Rngs):
    if activation not in ACTIVATIONS and activation not in GATED:
      raise ValueError(f'model.activation={activation!r}; choose one of '
                       f'{sorted(ACTIVATIONS) + sorted(GATED)}')
    self.gated = activation in GATED
    self.act = ACTIVATIONS[GATED.get(activation, activation)]
    dense = dict(use_bias=use_bias, init_std=init_std, dtype=dtype, param_dtype=param_dtype,
                 rngs=rngs)
    if self.gated:
      self.wi_0 = Dense((d_model,), (d_ff,), ('embed', 'mlp'), **dense)
      self.wi_1 = Dense((d_model,), (d_ff,), ('embed', 'mlp'), **dense)
    else:
      self.wi = Dense((d_model,), (d_ff,), ('embed', 'mlp'), **dense)
    self.wo = Dense((d_ff,), (d_model,), ('mlp', 'embed'), **dense)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x, *, deterministic=True):
    h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
    return self.wo(self.dropout(h, deterministic=deterministic))


def sinusoidal(positions, dim, max_timescale=10000.0):
  """The 2017 paper's encoding: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
  inv_freq = max_timescale ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = positions[..., None].astype(jnp.float32) * inv_freq
  pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return pe.reshape(positions.shape + (-1,))[..., :dim]


def apply_rotary(x_BTNH, positions_BT, base=10000.0):
  """Rotary position embedding (Su et al. 2021), rotating the two halves of each head."""
  h = x_BTNH.shape[-1]
  inv_freq = base ** (-jnp.arange(0, h, 2, dtype=jnp.float32) / h)
  angles = positions_BT[..., None].astype(jnp.float32) * inv_freq  # [B, T, H/2]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)


def relative_bucket(relative_position, *, bidirectional, num_buckets, max_distance):
  """T5's log-spaced buckets for (key position - query position)."""
  ret = 0
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    ret += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  val_if_large = max_exact + (
      jnp.log(jnp.maximum(n, max_exact).astype(jnp.float32) / max_exact)
      / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBias(nnx.Module):
  """T5 relative position bias: a learned scalar per (bucket, head), added to attention logits."""

  def __init__(self, num_buckets, max_distance, num_heads, *, bidirectional, init_std,
               param_dtype, rngs: nnx.Rngs):
    self.num_buckets, self.max_distance = num_buckets, max_distance
    self.bidirectional = bidirectional
    self.embedding = param(rngs, (num_buckets, num_heads), ('relpos_buckets', 'heads'),
                           init_std, param_dtype)

  def __call__(self, q_positions_BT, kv_positions_BS):
    rel = kv_positions_BS[:, None, :] - q_positions_BT[:, :, None]  # [B, T, S]
    buckets = relative_bucket(rel, bidirectional=self.bidirectional,
                              num_buckets=self.num_buckets, max_distance=self.max_distance)
    bias_BTSN = jnp.take(self.embedding.value, buckets, axis=0)
    return jnp.transpose(bias_BTSN, (0, 3, 1, 2)).astype(jnp.float32)  # [B, N, T, S]
