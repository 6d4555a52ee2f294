"""Shared blocks and the layer stack every family is built from.

Block: self-attention (bidirectional, causal or prefix, as the Stack says) + optional
cross-attention ('encoder_decoder_attention') + MLP (or a mixture of experts, models/moe.py,
on every model.moe_every-th layer; padding is routed nowhere), one after the other, or with
hp.parallel_block all reading one norm output ('attention_norm') and all added to the residual
(GPT-J, PaLM): x + attn(n(x)) [+ cross(n(x))] + mlp(n(x)). Norm placement (pre / post) and
everything else come from HParams. `Stack` adds positions to token embeddings (or a logits bias:
T5 relative, ALiBi; nothing for NoPE), runs the blocks (a Python loop, or `nnx.scan` over stacked
layers when hp.scan_layers) with optional remat, and applies the final norm. Each layer's local
window (hp.layer_windows) is a Python int when every layer has the same one or the layers are
unrolled, and a scanned input beside the stacked layers when a scanned stack interleaves local
and global layers. A scanned stack with dense and MoE MLPs interleaved scans `Period`s of
moe_every blocks (the last one MoE). Dropout (hp.dropout_rate) follows the embeddings and every sublayer; inside the
MLP after its activation when hp.mlp_dropout, and after the final norm when hp.final_dropout.
A Block with `stability` set (log.stability) sows `residual_rms`, the RMS of its output over real
tokens (monitoring/stability.py).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.models import attention, layers, moe as moe_lib
from transformer.models.hparams import HParams

REMAT_POLICIES = {
    'full': None,  # save nothing: recompute the whole block in the backward pass
    'dots': jax.checkpoint_policies.checkpoint_dots,
}


def _attention(hp: HParams, rngs, *, rotary):
  return attention.MultiHeadAttention(
      hp.d_model, hp.num_heads, num_kv_heads=hp.num_kv_heads, head_dim=hp.head_dim,
      use_bias=hp.use_bias, scale_attention=hp.scale_attention,
      dropout_rate=hp.attention_dropout_rate, implementation=hp.attention_impl,
      rotary=rotary, rotary_base=hp.rotary_base, dtype=hp.compute_dtype,
      param_dtype=hp.params_dtype, init_std=hp.hidden_std(), kernels=hp.kernels,
      qk_norm=hp.qk_norm, norm_eps=hp.norm_eps, softcap=hp.attention_softcap,
      scale=hp.attention_scale, rngs=rngs)


def _norm(hp: HParams):
  return layers.LayerNorm(hp.d_model, kind=hp.norm, eps=hp.norm_eps, dtype=hp.compute_dtype,
                          param_dtype=hp.params_dtype)


class Block(nnx.Module):
  """Residual sublayers around self-attention, optional cross-attention and an MLP, pre- or
  post-norm. Whether self-attention is causal is the caller's (Stack's) argument."""

  def __init__(self, hp: HParams, *, cross_attention, moe=False, rngs: nnx.Rngs):
    self.pre_norm = hp.norm_position == 'pre'
    self.moe = moe
    self.parallel = hp.parallel_block
    rotary = hp.positions == 'rotary'
    self.attention_norm = _norm(hp)
    self.self_attention = _attention(hp, rngs, rotary=rotary)
    if cross_attention:
      self.cross_attention_norm = None if self.parallel else _norm(hp)
      self.encoder_decoder_attention = _attention(hp, rngs, rotary=False)
    else:
      self.encoder_decoder_attention = None
    self.mlp_norm = None if self.parallel else _norm(hp)
    self.mlp = moe_lib.MoE(hp, rngs=rngs) if moe else layers.MLP(
        hp.d_model, hp.d_ff, activation=hp.activation, use_bias=hp.use_bias,
        dropout_rate=hp.dropout_rate if hp.mlp_dropout else 0.0, init_std=hp.hidden_std(),
        dtype=hp.compute_dtype, param_dtype=hp.params_dtype, kernels=hp.kernels, rngs=rngs)
    self.dropout = nnx.Dropout(hp.dropout_rate, rngs=rngs)
    self.stability = False   # sow the residual stream's RMS (the train step sets it)

  def _residual(self, norm, fn, x, deterministic):
    if self.pre_norm:
      return x + self.dropout(fn(norm(x)), deterministic=deterministic)
    return norm(x + self.dropout(fn(x), deterministic=deterministic))

  def __call__(self, x, *, segment_ids, positions, causal, prefix=None, bias=None, encoded=None,
               encoded_segment_ids=None, encoded_positions=None, window=None,
               deterministic=True, decode=False):
    def self_attn(h):
      return self.self_attention(h, q_segment_ids=segment_ids, q_positions=positions,
                                 causal=causal, q_prefix=prefix, bias=bias, window=window,
                                 deterministic=deterministic, decode=decode)

    def cross_attn(h):
      return self.encoder_decoder_attention(
          h, encoded, q_segment_ids=segment_ids, kv_segment_ids=encoded_segment_ids,
          q_positions=positions, kv_positions=encoded_positions, causal=False,
          deterministic=deterministic, decode=decode)
    if self.moe:   # padding (segment id 0) is routed nowhere
      mlp = lambda h: self.mlp(h, mask=segment_ids != 0, deterministic=deterministic)
    else:
      mlp = lambda h: self.mlp(h, deterministic=deterministic)
    crossing = self.encoder_decoder_attention is not None
    if self.parallel:   # pre-norm only (HParams refuses post): one norm, every sublayer from it
      h = self.attention_norm(x)
      for fn in (self_attn, cross_attn, mlp) if crossing else (self_attn, mlp):
        x = x + self.dropout(fn(h), deterministic=deterministic)
    else:
      x = self._residual(self.attention_norm, self_attn, x, deterministic)
      if crossing:
        x = self._residual(self.cross_attention_norm, cross_attn, x, deterministic)
      x = self._residual(self.mlp_norm, mlp, x, deterministic)
    if self.stability:
      self.sow(nnx.Intermediate, 'residual_rms', residual_rms(x, segment_ids))
    return x


def residual_rms(x_BLD, segment_ids_BL):
  """sqrt(mean(x^2)) over the real tokens (segment id != 0) of x [B, L, D], float32."""
  x_BLD = jax.lax.stop_gradient(x_BLD).astype(jnp.float32)
  weight_BL = (segment_ids_BL != 0).astype(jnp.float32)
  total = jnp.sum(jnp.square(x_BLD) * weight_BL[..., None])
  return jnp.sqrt(total / jnp.maximum(jnp.sum(weight_BL) * x_BLD.shape[-1], 1))


class Period(nnx.Module):
  """The scanned unit of a stack whose dense and MoE MLPs interleave (model.moe_every = P with
  model.scan_layers): P blocks, the last one MoE, so the scan runs over num_layers / P units."""

  def __init__(self, hp: HParams, *, cross_attention, rngs: nnx.Rngs):
    self.blocks = nnx.List([Block(hp, cross_attention=cross_attention,
                                  moe=j + 1 == hp.moe_every, rngs=rngs)
                            for j in range(hp.moe_every)])


def _blocks(unit):
  """The blocks of one unit of a stack's layers (a Block, or a Period of them)."""
  return list(unit.blocks) if isinstance(unit, Period) else [unit]


class Stack(nnx.Module):
  """Positions + embedding norm + `num_layers` blocks + final norm: an encoder (causal=False) or
  a decoder (causal=True, optionally with cross-attention to an encoder)."""

  def __init__(self, hp: HParams, *, num_layers, causal, cross_attention=False,
               rngs: nnx.Rngs):
    self.hp, self.causal, self.num_layers = hp, causal, num_layers
    std = hp.std(1.0)
    if hp.positions == 'learned':
      self.position_embedding = layers.param(rngs, (hp.max_len, hp.d_model), ('length', 'embed'),
                                             std, hp.params_dtype)
    if hp.positions == 'relative':
      self.relative_bias = layers.RelativePositionBias(
          hp.relative_buckets, hp.relative_max_distance, hp.num_heads, bidirectional=not causal,
          init_std=hp.std(1.0), param_dtype=hp.params_dtype, rngs=rngs)
    self.embed_norm = _norm(hp) if hp.embed_norm else None
    self.dropout = nnx.Dropout(hp.dropout_rate, rngs=rngs)
    moes = moe_lib.moe_layers(hp, num_layers)   # per layer: a mixture of experts MLP
    self.period = moe_lib.scan_period(hp)        # layers per scanned unit
    if hp.scan_layers:
      make = ((lambda r: Period(hp, cross_attention=cross_attention, rngs=r))
              if self.period > 1 else
              (lambda r: Block(hp, cross_attention=cross_attention, moe=moes[0], rngs=r)))

      @nnx.split_rngs(splits=num_layers // self.period)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
      def stacked(r):
        return make(r)
      self.layers = stacked(rngs)
    else:
      self.layers = nnx.List([Block(hp, cross_attention=cross_attention, moe=moes[i], rngs=rngs)
                              for i in range(num_layers)])
    self.final_norm = _norm(hp) if hp.final_norm else None
    self.cache_len = 0
    self.windows = hp.layer_windows(num_layers)   # per layer; 0: global

  def _each_block(self, fn, *args):
    """fn(block, *args) on every block (under nnx.vmap when the layers are scanned)."""
    if self.hp.scan_layers:
      each = lambda unit, *a: [fn(block, *a) for block in _blocks(unit)] and None
      nnx.vmap(each, in_axes=(0,) + (None,) * len(args), out_axes=0)(self.layers, *args)
    else:
      for block in self.layers:
        fn(block, *args)

  def init_cache(self, batch_size, max_len, memory_BSD=None, memory_segment_ids_BS=None):
    """Allocate KV caches in every self-attention for decoding up to `max_len` tokens; with a
    memory (the encoder output), project it once into every cross-attention's keys/values."""
    self.cache_len = max_len
    self.cached_positions = nnx.Cache(jnp.zeros((batch_size, max_len), jnp.int32))
    self.cache_index = nnx.Cache(jnp.zeros((), jnp.int32))
    self._each_block(lambda block: block.self_attention.init_cache(batch_size, max_len))
    if memory_BSD is not None:
      self._each_block(lambda block, m, s: block.encoder_decoder_attention.init_memory(m, s),
                       memory_BSD, memory_segment_ids_BS)

  def reorder_cache(self, rows_R, memory=False):
    """Keep rows `rows_R` of every cache (beam parents, or rows repeated into beams)."""
    self.cached_positions.value = jnp.take(self.cached_positions.value, rows_R, axis=0)
    def reorder(block, rows):
      block.self_attention.reorder_cache(rows)
      if memory and block.encoder_decoder_attention is not None:
        block.encoder_decoder_attention.reorder_cache(rows, memory=True)
    self._each_block(reorder, rows_R)

  def _cached_positions(self, positions_BT):
    """Write the new positions at the cache index; every cached token's position [B, S]."""
    index = self.cache_index.value
    self.cached_positions.value = jax.lax.dynamic_update_slice(
        self.cached_positions.value, positions_BT.astype(jnp.int32), (0, index))
    self.cache_index.value = index + positions_BT.shape[1]
    return self.cached_positions.value

  def __call__(self, x_BLD, *, segment_ids, positions, prefix=None, encoded=None,
               encoded_segment_ids=None, encoded_positions=None, deterministic=True,
               decode=False):
    hp = self.hp
    if hp.positions == 'learned':
      x_BLD = x_BLD + jnp.take(self.position_embedding.value, positions, axis=0).astype(x_BLD.dtype)
    elif hp.positions == 'sinusoidal':
      x_BLD = x_BLD + layers.sinusoidal(positions, hp.d_model).astype(x_BLD.dtype)
    if self.embed_norm is not None:
      x_BLD = self.embed_norm(x_BLD)
    x_BLD = self.dropout(x_BLD, deterministic=deterministic)
    bias = None
    if hp.positions in ('relative', 'alibi'):   # keys at their cached positions when decoding
      kv_positions = self._cached_positions(positions) if decode else positions
      bias = (self.relative_bias(positions, kv_positions) if hp.positions == 'relative' else
              layers.alibi_bias(positions, kv_positions, hp.num_heads))
    if encoded is not None and encoded_positions is None:
      encoded_positions = jnp.zeros(encoded.shape[:2], jnp.int32)
    kwargs = dict(segment_ids=segment_ids, positions=positions, causal=self.causal,
                  prefix=prefix, bias=bias, encoded=encoded,
                  encoded_segment_ids=encoded_segment_ids, encoded_positions=encoded_positions,
                  deterministic=deterministic, decode=decode)

    def apply(unit, x, windows):   # windows: one per block of the unit (ints or traced)
      def one(unit, x):
        for block, window in zip(_blocks(unit), windows):
          x = block(x, window=window, **kwargs)
        return x
      if hp.remat != 'none':
        one = nnx.remat(one, policy=REMAT_POLICIES[hp.remat], prevent_cse=not hp.scan_layers)
      return one(unit, x)

    p = self.period
    if hp.scan_layers and len(set(self.windows)) == 1:   # one static window (or none)
      @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry,
                transform_metadata={nnx.PARTITION_NAME: 'layers'})
      def run(x, unit):
        return apply(unit, x, self.windows[:p])
      x_BLD = run(x_BLD, self.layers)
    elif hp.scan_layers:   # interleaved local / global: the windows are a scanned input
      @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry,
                transform_metadata={nnx.PARTITION_NAME: 'layers'})
      def run_windows(x, unit, windows):
        return apply(unit, x, windows)
      x_BLD = run_windows(x_BLD, self.layers,
                          jnp.asarray(self.windows, jnp.int32).reshape(-1, p))
    else:
      for block, window in zip(self.layers, self.windows):
        x_BLD = apply(block, x_BLD, (window,))
    if self.final_norm is not None:  # pre-norm stacks
      x_BLD = self.final_norm(x_BLD)
      if hp.final_dropout:  # T5 drops out after it; GPT-2 does not
        x_BLD = self.dropout(x_BLD, deterministic=deterministic)
    return x_BLD


SHARED_SUBLAYERS = ('attention_norm', 'self_attention', 'mlp_norm', 'mlp')


def share_layers(encoder: Stack, decoder: Stack):
  """Make decoder block i use encoder block i's self-attention, MLP and their norms (the same
  parameters, counted and saved once); each stack keeps its own cross-attention, positions and
  final norm. Whether attention is causal is the Stack's argument, so one module serves both."""
  for enc, dec in zip(encoder.layers, decoder.layers, strict=True):
    for name in SHARED_SUBLAYERS:
      setattr(dec, name, getattr(enc, name))
