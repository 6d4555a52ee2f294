"""Building blocks chosen by `config.model` fields: dense projections, embeddings, positions
(sinusoidal, learned, T5 relative bias, rotary, ALiBi), norms and MLPs, the tanh soft-cap. The products, the tied logits
and the exact GELU come from the kernel set `model.kernels` names (models/kernels.py).

Every parameter carries logical axis names ('embed', 'mlp', 'heads', 'kv', 'vocab', ...) as its
`out_sharding` metadata; the rules in `transformer/sharding.py` map them onto mesh axes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.models import kernels as kernel_lib


ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': None,   # the exact GELU of model.kernels' set: see activation_function()
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'silu': jax.nn.silu,
}
# Gated variants (Shazeer 2020): act(x W0) * (x W1). geglu uses the tanh GELU, as T5 v1.1 does.
GATED = {'geglu': 'gelu_tanh', 'swiglu': 'silu', 'reglu': 'relu'}


def activation_function(name, kernels='tuned'):
  """The function of activation `name` (of a gated name, its act); 'gelu' is the `kernels`
  set's (models/kernels.py)."""
  name = GATED.get(name, name)
  return kernel_lib.select(kernels).gelu if name == 'gelu' else ACTIVATIONS[name]


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
  init_std None means fan-in scaling: std = 1 / sqrt(prod(in_shape)); `kernels` (model.kernels)
  names the set whose dense_dot computes the product.
  """

  def __init__(self, in_shape, out_shape, axes, *, use_bias=True, init_std=0.02,
               dtype=jnp.float32, param_dtype=jnp.float32, kernels='tuned', rngs: nnx.Rngs):
    self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
    self.dtype = dtype
    self.dot = kernel_lib.select(kernels).dense_dot
    std = 1.0 / math.sqrt(np.prod(self.in_shape)) if init_std is None else init_std
    self.kernel = param(rngs, self.in_shape + self.out_shape, axes, std, param_dtype)
    out_axes = axes[len(self.in_shape):]
    self.bias = (logical_param(jnp.zeros(self.out_shape, param_dtype), out_axes)
                 if use_bias else None)

  def __call__(self, x):
    y = self.dot(x.astype(self.dtype), self.kernel.value.astype(self.dtype), len(self.in_shape))
    if self.bias is not None:
      y = y + self.bias.value.astype(self.dtype)
    return y


class Embed(nnx.Module):
  """Token embedding table [vocab, embed]; `attend` gives tied output logits."""

  def __init__(self, vocab_size, d_model, *, init_std, dtype, param_dtype, kernels='tuned',
               rngs: nnx.Rngs):
    self.dtype = dtype
    chosen = kernel_lib.select(kernels)
    self.tied_logits, self.biased_tied_logits = chosen.tied_logits, chosen.biased_tied_logits
    self.embedding = param(rngs, (vocab_size, d_model), ('vocab', 'embed'), init_std, param_dtype)

  def __call__(self, ids):
    return jnp.take(self.embedding.value, ids, axis=0).astype(self.dtype)

  def attend(self, x_BLD, bias_V=None):
    """Tied logits [B, L, V]; with `bias_V` float32 logits + the bias (`biased_tied_logits`)."""
    x_BLD, table_VD = x_BLD.astype(self.dtype), self.embedding.value.astype(self.dtype)
    if bias_V is None:
      return self.tied_logits(x_BLD, table_VD)
    return self.biased_tied_logits(x_BLD, table_VD, bias_V.astype(jnp.float32))


class LayerNorm(nnx.Module):
  """LayerNorm (scale + bias) or RMSNorm (scale only, T5) over the last axis, in float32; `axis`
  is the parameters' logical name ('kv' for the per-head query/key norms of model.qk_norm)."""

  def __init__(self, dim, *, kind='layernorm', eps=1e-5, dtype=jnp.float32,
               param_dtype=jnp.float32, axis='embed'):
    if kind not in ('layernorm', 'rmsnorm'):
      raise ValueError(f'model.norm={kind!r}; choose layernorm or rmsnorm')
    self.kind, self.eps, self.dtype = kind, eps, dtype
    self.scale = logical_param(jnp.ones((dim,), param_dtype), (axis,))
    self.bias = (logical_param(jnp.zeros((dim,), param_dtype), (axis,))
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
               param_dtype, kernels='tuned', rngs: nnx.Rngs):
    if activation not in ACTIVATIONS and activation not in GATED:
      raise ValueError(f'model.activation={activation!r}; choose one of '
                       f'{sorted(ACTIVATIONS) + sorted(GATED)}')
    self.gated = activation in GATED
    self.act = activation_function(activation, kernels)
    dense = dict(use_bias=use_bias, init_std=init_std, dtype=dtype, param_dtype=param_dtype,
                 kernels=kernels, rngs=rngs)
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


def softcap(x, cap):
  """cap * tanh(x / cap) in float32 (Gemma 2's logit soft-cap); x unchanged when cap is 0."""
  return cap * jnp.tanh(x.astype(jnp.float32) / cap) if cap else x


def alibi_slopes(num_heads):
  """ALiBi's head slopes (Press et al. 2022): 2^(-8i/n) for i = 1..n when n is a power of two;
  otherwise those of the power of two below n, then every other slope of the power above."""
  if num_heads & (num_heads - 1) == 0:
    return [2.0 ** (-8.0 * i / num_heads) for i in range(1, num_heads + 1)]
  below = 2 ** int(math.floor(math.log2(num_heads)))
  return alibi_slopes(below) + alibi_slopes(2 * below)[0::2][:num_heads - below]


def alibi_bias(q_positions_BT, kv_positions_BS, num_heads):
  """-slope_n * |pos_q - pos_kv| as float32 [B, N, T, S]: the causal form -slope * (i - j) on
  every entry a causal mask allows (j <= i), the symmetric bidirectional form elsewhere.
  Positions, not indices: distances count within each packed example and across a KV cache."""
  dist_BTS = jnp.abs(q_positions_BT[:, :, None] - kv_positions_BS[:, None, :])
  slopes_N = jnp.asarray(alibi_slopes(num_heads), jnp.float32)
  return -slopes_N[None, :, None, None] * dist_BTS[:, None].astype(jnp.float32)


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
