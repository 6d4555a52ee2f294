"""The one attention kernel: every attention in the codebase goes through `attend`.

Callers describe structure, not masks: segment ids (0 = padding, packed examples 1, 2, ...),
positions inside each example, a causal flag and an optional prefix (prefix-LM). The boolean mask
is built in one place, `attention_mask`:

  allowed[i, j] = seg_q[i] == seg_kv[j] != 0
                  and (not causal or pos_kv[j] <= pos_q[i] or (prefix_q[i] and prefix_kv[j]))
                  and (not window or |pos_q[i] - pos_kv[j]| < window)

`window` (model.local_window, per layer: a Python int, or a traced scalar when the layers are
scanned and the pattern interleaves local and global; 0 = global) is the one sliding-window
mask: causal i - w < j <= i, bidirectional |i - j| < w, counted in positions, so within each
packed example and over a KV cache. Logits are scale * q.k, then `softcap` (cap * tanh(x / cap),
model.attention_softcap), then the additive bias (T5 relative positions, ALiBi), then the mask.

Backends behind `implementation`: 'xla' and 'cudnn' (`jax.nn.dot_product_attention`), 'splash'
(Pallas splash attention on TPU, models/splash.py: it takes the structure, not the mask; its
LocalMask for a window, its own soft-cap, no bias) and 'reference' (plain einsum + softmax, also
the path that returns weights for the attention pictures and applies attention dropout). With a
soft-cap, 'xla' runs the einsum form (jax.nn.dot_product_attention has no cap; `choose` says so)
and cuDNN is not taken. `choose` decides once per model, before it is built,
and says why: 'auto' takes splash on TPU and cuDNN on NVIDIA GPUs where they can run the model,
else xla; an explicit backend that cannot run it is a one-line ConfigError. Nothing falls back
at run time. Softmax is always computed in float32.

With `stability` set (the train step's `log.stability`, monitoring/stability.py) the module sows
per call, from the queries and keys it attends with: `max_logit` (the largest scale * q.k over the
allowed pairs, before the soft-cap and bias), `mean_query_norm` and `mean_key_norm` (the mean
L2 norm of a head's query / key vector over real tokens): `logit_stats`, on stopped gradients.

`MultiHeadAttention` is the single module built on it (q/k/v/out projections, grouped KV heads,
optional per-head query/key norms (model.qk_norm, before rotary), rotary positions, an optional
KV cache for incremental decoding that remembers each cached
token's segment id and position, so prompts of different lengths share one batch, and for
cross-attention an optional memory: the encoder output's keys/values projected once).
"""

import typing

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.errors import ConfigError
from transformer.models import layers, splash

IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'splash', 'reference')
# model.positions that add a bias to the logits, as `choose` names them (True: T5's)
BIAS_POSITIONS = {'relative': "T5's relative-position bias", 'alibi': "ALiBi's distance bias"}


class Structure(typing.NamedTuple):
  """What the mask is built from (the arguments of `attention_mask`)."""
  q_segment_ids: jax.Array
  kv_segment_ids: jax.Array
  q_positions: jax.Array
  kv_positions: jax.Array
  causal: bool
  q_prefix: typing.Any = None
  kv_prefix: typing.Any = None
  window: typing.Any = None   # model.local_window of this layer: None / 0 global, an int, or a
                              # traced scalar (scanned interleaved layers)


def is_global(window):
  """True when `window` (None, an int, or a traced scalar) certainly adds no band."""
  return window is None or (isinstance(window, (int, np.integer)) and window <= 0)


def attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions, *, causal,
                   q_prefix=None, kv_prefix=None, window=None):
  """Boolean mask [B, 1, T, S]: True where query i may attend to key j."""
  same = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (
      kv_segment_ids[:, None, :] != 0)
  if causal:
    order = kv_positions[:, None, :] <= q_positions[:, :, None]
    if q_prefix is not None:
      order |= q_prefix[:, :, None].astype(bool) & kv_prefix[:, None, :].astype(bool)
    same &= order
  if not is_global(window):
    near = jnp.abs(q_positions[:, :, None] - kv_positions[:, None, :]) < window
    same &= near if isinstance(window, (int, np.integer)) else near | (window <= 0)
  return same[:, None, :, :]


def _reference(q_BTNH, k_BSKH, v_BSKH, mask_B1TS, bias, scale, dropout, softcap=0.0):
  """einsum + float32 softmax; returns (output, weights [B, N, T, S])."""
  b, t, n, h = q_BTNH.shape
  kv_heads = k_BSKH.shape[2]
  q_BTKGH = q_BTNH.reshape(b, t, kv_heads, n // kv_heads, h)
  logits_BKGTS = jnp.einsum('btkgh,bskh->bkgts', q_BTKGH, k_BSKH).astype(jnp.float32) * scale
  logits_BNTS = layers.softcap(logits_BKGTS.reshape(b, n, t, -1), softcap)
  if bias is not None:
    logits_BNTS = logits_BNTS + bias.astype(jnp.float32)
  logits_BNTS = jnp.where(mask_B1TS, logits_BNTS, jnp.finfo(jnp.float32).min)
  weights_BNTS = jax.nn.softmax(logits_BNTS, axis=-1)
  if dropout is not None:
    weights_BNTS = dropout(weights_BNTS)
  probs_BKGTS = weights_BNTS.astype(v_BSKH.dtype).reshape(b, kv_heads, n // kv_heads, t, -1)
  out_BTKGH = jnp.einsum('bkgts,bskh->btkgh', probs_BKGTS, v_BSKH)
  return out_BTKGH.reshape(b, t, n, h), weights_BNTS


def _cannot(impl, *, platform, dtype, head_dim, lengths, bias, dropout, capability, softcap):
  """Why `impl` cannot run a model like this ('' when it can)."""
  if impl == 'splash':
    if bias:
      return (f"{BIAS_POSITIONS.get(bias, BIAS_POSITIONS['relative'])} is added to the logits, "
              'and splash takes no bias')
    if dropout:
      return 'attention dropout > 0 acts on the attention weights, which splash never forms'
    return splash.unsupported(lengths)
  if impl == 'cudnn':
    if platform != 'gpu':
      return f'cuDNN needs an NVIDIA GPU (this run is on {platform})'
    if dropout:
      return 'attention dropout > 0 acts on the attention weights, which cuDNN does not return'
    if softcap:
      return 'cuDNN attention (jax.nn.dot_product_attention) has no logit soft-cap'
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
      return f'cuDNN attention takes bfloat16 or float16 inputs, not {dtype}'
    most = 256 if capability >= (9, 0) else 128
    if head_dim > most or head_dim % 8:
      return f'cuDNN takes a head dimension of at most {most} and a multiple of 8, not {head_dim}'
    odd = [n for n in lengths if n % 2]
    if odd:   # the mask reaches cuDNN as a bias, and a biased backward needs even lengths
      return f'cuDNN needs even sequence lengths with a mask, not {odd[0]}'
  return ''


def choose(implementation, *, platform, dtype='float32', head_dim=64, lengths=(), bias=False,
           dropout=False, capability=(0, 0), softcap=False):
  """(backend, why) for a model, decided before it is built.

  `platform` of the run's devices ('tpu', 'gpu', 'cpu'); `lengths` every query and key length
  the model attends over; `bias` an additive logits bias (True: T5's relative positions, or the
  model.positions that adds one, a key of BIAS_POSITIONS); `dropout` attention dropout > 0;
  `capability` the GPU's compute capability; `softcap` model.attention_softcap > 0 (splash
  takes it; xla runs the einsum form, and says so; cuDNN cannot). 'auto': splash on TPU,
  cuDNN on GPU, where they can run the model, else xla. An explicit backend that cannot run it
  is a ConfigError naming model.attention_impl and the reason. Explicit 'splash' off TPU runs
  in Pallas interpret mode (for tests; slow).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ConfigError(f'`model.attention_impl={implementation}`: choose one of '
                      f'{", ".join(IMPLEMENTATIONS)}')
  facts = dict(platform=platform, dtype=dtype, head_dim=head_dim, lengths=tuple(lengths),
               bias=bias, dropout=dropout, capability=tuple(capability), softcap=softcap)
  if implementation != 'auto':
    why = _cannot(implementation, **facts)
    if why:
      raise ConfigError(f'`model.attention_impl={implementation}`: {why}; use '
                        'model.attention_impl=auto or xla')
    interpret = implementation == 'splash' and platform != 'tpu'
    return _noted(implementation, 'set' + (' (Pallas interpret mode: not a TPU)' if interpret
                                           else ''), softcap)
  fused = {'tpu': 'splash', 'gpu': 'cudnn'}.get(platform)
  if fused is None:
    return _noted('xla', f'auto: no fused kernel on {platform}', softcap)
  why = _cannot(fused, **facts)
  return _noted('xla', f'auto: not {fused}, {why}', softcap) if why else (fused,
                                                                          f'auto on {platform}')


def _noted(impl, why, softcap):
  """(impl, why), saying that 'xla' runs a soft-capped model in the einsum form."""
  if softcap and impl == 'xla':
    why += ('; model.attention_softcap: the einsum form (jax.nn.dot_product_attention has no '
            'cap)')
  return impl, why


def resolve_implementation(implementation, dtype):
  """The backend `choose` gives a model of `dtype` on the default backend (no other facts)."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'model.attention_impl={implementation!r}; choose one of {IMPLEMENTATIONS}')
  return choose(implementation, platform=jax.default_backend(), dtype=dtype)[0]


def attend(q_BTNH, k_BSKH, v_BSKH, mask_B1TS, *, bias=None, scale=1.0,
           implementation='xla', dropout=None, return_weights=False, structure=None,
           softcap=0.0):
  """Scaled dot-product attention through the chosen backend (`choose` resolves 'auto').

  q [B, T, N, H]; k, v [B, S, K, H] with K dividing N (grouped KV heads); mask [B, 1, T, S];
  bias broadcastable to [B, N, T, S] (float, added to the logits). Returns out [B, T, N, H] and,
  with return_weights, the float32 attention weights [B, N, T, S]. `dropout` (a callable on the
  weights) and `return_weights` take the reference path whatever the backend (the attention
  pictures ask for weights in a pass of their own). 'splash' reads `structure` (a Structure),
  not the mask. 'auto' here (a model built outside the trainer, which resolves it up front) is
  `choose` on the default backend with these shapes. `softcap` > 0: logits -> cap * tanh(x / cap)
  before the bias and the mask ('xla' then runs the einsum form; 'cudnn' refuses it).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'model.attention_impl={implementation!r}; choose one of {IMPLEMENTATIONS}')
  if implementation == 'auto':   # a model built outside the trainer: decided from these shapes
    implementation = choose('auto', platform=jax.default_backend(), dtype=q_BTNH.dtype,
                            head_dim=q_BTNH.shape[-1], lengths=(q_BTNH.shape[1], k_BSKH.shape[1]),
                            bias=bias is not None, softcap=bool(softcap))[0]
    implementation = 'xla' if implementation == 'splash' and structure is None else implementation
  if softcap and implementation == 'cudnn':
    raise ValueError('cuDNN attention has no soft-cap (attention.choose refuses '
                     'model.attention_softcap with cudnn)')
  if (return_weights or dropout is not None or implementation == 'reference' or
      (softcap and implementation == 'xla')):
    out, weights = _reference(q_BTNH, k_BSKH, v_BSKH, mask_B1TS, bias, scale, dropout, softcap)
    return (out, weights) if return_weights else out
  if implementation == 'splash':
    if bias is not None or structure is None:
      raise ValueError('splash attention takes the mask structure and no bias (attention.choose '
                       'refuses T5 relative positions and ALiBi)')
    return splash.attend(q_BTNH, k_BSKH, v_BSKH, structure, scale=scale, softcap=softcap,
                         interpret=jax.default_backend() != 'tpu')
  if bias is not None:
    bias = bias.astype(q_BTNH.dtype)
  impl = 'cudnn' if implementation == 'cudnn' else 'xla'
  return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, bias=bias, mask=mask_B1TS,
                                      scale=scale, implementation=impl)


def logit_stats(q_BTNH, k_BSKH, mask_B1TS, scale, q_valid_BT, kv_valid_BS):
  """{'max_logit', 'mean_query_norm', 'mean_key_norm'} as float32 scalars (the module docstring
  says what each is); a batch with no allowed pair has max_logit 0."""
  q_BTNH, k_BSKH = jax.lax.stop_gradient((q_BTNH, k_BSKH))
  b, t, n, h = q_BTNH.shape
  kv_heads = k_BSKH.shape[2]
  logits_BKGTS = jnp.einsum('btkgh,bskh->bkgts', q_BTNH.reshape(b, t, kv_heads, n // kv_heads, h),
                            k_BSKH, preferred_element_type=jnp.float32)
  logits_BNTS = logits_BKGTS.reshape(b, n, t, -1) * scale
  top = jnp.max(jnp.where(mask_B1TS, logits_BNTS, -jnp.inf))

  def mean_norm(x_BLNH, valid_BL):
    norms_BLN = jnp.linalg.norm(x_BLNH.astype(jnp.float32), axis=-1)
    weight_BL1 = valid_BL[..., None].astype(jnp.float32)
    count = jnp.sum(weight_BL1) * x_BLNH.shape[2]
    return jnp.sum(norms_BLN * weight_BL1) / jnp.maximum(count, 1)
  return {'max_logit': jnp.where(jnp.any(mask_B1TS), top, 0.0),
          'mean_query_norm': mean_norm(q_BTNH, q_valid_BT),
          'mean_key_norm': mean_norm(k_BSKH, kv_valid_BS)}


class MultiHeadAttention(nnx.Module):
  """Self- or cross-attention with separate q/k/v/out projections ('query', 'key', 'value', 'out')."""

  def __init__(self, d_model, num_heads, *, num_kv_heads=0, head_dim=0, use_bias=True,
               scale_attention=True, dropout_rate=0.0, implementation='auto', rotary=False,
               rotary_base=10000.0, dtype=jnp.float32, param_dtype=jnp.float32, init_std=0.02,
               kernels='tuned', qk_norm='none', norm_eps=1e-6, softcap=0.0, scale=None,
               rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.num_kv_heads = num_kv_heads or num_heads
    self.head_dim = head_dim or d_model // num_heads
    self.scale = scale if scale is not None else (   # `scale`: muP's 1/head_dim (HParams)
        self.head_dim ** -0.5 if scale_attention else 1.0)
    self.implementation = implementation
    self.rotary = rotary
    self.rotary_base = rotary_base
    self.softcap = softcap
    self.dtype = dtype
    self.capture_weights = False
    self.stability = False   # sow logit_stats (the train step sets it: log.stability)
    h, n, k = self.head_dim, num_heads, self.num_kv_heads
    # T5 folds the 1/sqrt(head_dim) into the query init when the logits are not scaled.
    q_std = init_std if init_std is not None or scale_attention else (d_model * h) ** -0.5
    dense = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, kernels=kernels,
                 rngs=rngs)
    self.query = layers.Dense((d_model,), (n, h), ('embed', 'heads', 'kv'), init_std=q_std, **dense)
    self.key = layers.Dense((d_model,), (k, h), ('embed', 'kv_heads', 'kv'), init_std=init_std,
                            **dense)
    self.value = layers.Dense((d_model,), (k, h), ('embed', 'kv_heads', 'kv'), init_std=init_std,
                              **dense)
    self.out = layers.Dense((n, h), (d_model,), ('heads', 'kv', 'embed'), init_std=init_std,
                            **dense)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate else None
    # model.qk_norm: one scale (and bias) per head_dim, shared by the heads
    norm = dict(kind=qk_norm, eps=norm_eps, dtype=dtype, param_dtype=param_dtype, axis='kv')
    self.query_norm = layers.LayerNorm(h, **norm) if qk_norm != 'none' else None
    self.key_norm = layers.LayerNorm(h, **norm) if qk_norm != 'none' else None
    self.cached_key = nnx.data(None)  # an nnx.Cache once init_cache() is called
    self.memory_key = nnx.data(None)  # an nnx.Cache once init_memory() is called

  def init_cache(self, batch_size, max_len, dtype=None):
    """Allocate an empty KV cache for incremental decoding of up to `max_len` tokens."""
    shape = (batch_size, max_len, self.num_kv_heads, self.head_dim)
    dtype = dtype or self.dtype
    self.cached_key = nnx.Cache(jnp.zeros(shape, dtype))
    self.cached_value = nnx.Cache(jnp.zeros(shape, dtype))
    self.cached_segment_ids = nnx.Cache(jnp.zeros((batch_size, max_len), jnp.int32))
    self.cached_positions = nnx.Cache(jnp.zeros((batch_size, max_len), jnp.int32))
    self.cache_index = nnx.Cache(jnp.zeros((), jnp.int32))

  def init_memory(self, kv_BSD, kv_segment_ids_BS):
    """Cross-attention: project a fixed memory (the encoder output) to keys/values once; every
    decode=True call then attends over them instead of projecting the memory again."""
    k_BSKH, v_BSKH = self._keys(kv_BSD), self.value(kv_BSD)
    self.memory_key = nnx.Cache(k_BSKH)
    self.memory_value = nnx.Cache(v_BSKH)
    self.memory_segment_ids = nnx.Cache(jnp.asarray(kv_segment_ids_BS, jnp.int32))

  def reorder_cache(self, rows_R, memory=False):
    """Rows `rows_R` (indices into the batch) of every cached array, e.g. the parents of the
    surviving beams, or each row repeated to make room for beams; the memory too if asked."""
    names = ()
    if self.cached_key is not None:
      names += ('cached_key', 'cached_value', 'cached_segment_ids', 'cached_positions')
    if memory and self.memory_key is not None:
      names += ('memory_key', 'memory_value', 'memory_segment_ids')
    for name in names:
      var = getattr(self, name)
      var.value = jnp.take(var.value, rows_R, axis=0)

  def _keys(self, kv_BSD):
    k_BSKH = self.key(kv_BSD)
    return k_BSKH if self.key_norm is None else self.key_norm(k_BSKH)

  def __call__(self, x_BTD, kv_BSD=None, *, q_segment_ids, kv_segment_ids=None, q_positions,
               kv_positions=None, causal=False, q_prefix=None, kv_prefix=None, bias=None,
               window=None, deterministic=True, decode=False):
    """Attend from x to kv (kv None: self-attention); `window` this layer's local window.

    decode=True is one step of incremental decoding. Self-attention writes the new keys/values
    into the cache at `cache_index` and the queries attend over everything cached so far;
    cross-attention attends over its memory (init_memory) when it has one, else projects kv.
    """
    q_BTNH = self.query(x_BTD)
    if self.query_norm is not None:
      q_BTNH = self.query_norm(q_BTNH)
    if self.rotary:
      q_BTNH = layers.apply_rotary(q_BTNH, q_positions, self.rotary_base)
    if decode and self.memory_key is not None:   # cross-attention over its projected memory
      k_BSKH, v_BSKH = self.memory_key.value, self.memory_value.value
      kv_segment_ids = self.memory_segment_ids.value
      kv_positions, kv_prefix = jnp.zeros_like(kv_segment_ids), None
    else:
      self_attention = kv_BSD is None
      kv_BSD = x_BTD if self_attention else kv_BSD
      kv_segment_ids = q_segment_ids if kv_segment_ids is None else kv_segment_ids
      kv_positions = q_positions if kv_positions is None else kv_positions
      kv_prefix = q_prefix if kv_prefix is None else kv_prefix
      k_BSKH, v_BSKH = self._keys(kv_BSD), self.value(kv_BSD)
      if self.rotary:
        k_BSKH = layers.apply_rotary(k_BSKH, kv_positions, self.rotary_base)
      if decode and self_attention:
        if self.cached_key is None:
          raise ValueError('decode=True needs init_cache() first (see transformer.models.decoding)')
        k_BSKH, v_BSKH, kv_segment_ids, kv_positions, kv_prefix = self._update_cache(
            k_BSKH, v_BSKH, kv_segment_ids, kv_positions, kv_prefix)
    window = None if is_global(window) else window
    structure = Structure(q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal,
                          q_prefix, kv_prefix, window)
    mask = attention_mask(*structure[:4], causal=causal, q_prefix=q_prefix, kv_prefix=kv_prefix,
                          window=window)
    dropout = None
    if self.dropout is not None and not deterministic:
      dropout = lambda w: self.dropout(w, deterministic=False)
    impl = self.implementation
    if decode and impl == 'splash':   # a few queries over the cache: not what splash tiles
      impl = 'xla'
    out = attend(q_BTNH, k_BSKH, v_BSKH, mask, bias=bias, scale=self.scale,
                 implementation=impl, dropout=dropout, softcap=self.softcap,
                 return_weights=self.capture_weights, structure=structure)
    if self.stability:   # monitoring/stability.py reads them
      for name, value in logit_stats(q_BTNH, k_BSKH, mask, self.scale, q_segment_ids != 0,
                                     kv_segment_ids != 0).items():
        self.sow(nnx.Intermediate, name, value)
    if self.capture_weights:   # monitoring/attention.py reads both
      out, weights = out
      self.sow(nnx.Intermediate, 'attention_weights', weights)
      self.sow(nnx.Intermediate, 'attention_mask', mask)
    return self.out(out)

  def _update_cache(self, k_BTKH, v_BTKH, segment_ids_BT, positions_BT, prefix_BT):
    """Write T new keys/values (and their segment ids and positions) at cache_index; return the
    whole cache as the key/value side."""
    index = self.cache_index.value
    for name, new, start in (('cached_key', k_BTKH, (0, index, 0, 0)),
                             ('cached_value', v_BTKH, (0, index, 0, 0)),
                             ('cached_segment_ids', segment_ids_BT, (0, index)),
                             ('cached_positions', positions_BT, (0, index))):
      var = getattr(self, name)
      var.value = jax.lax.dynamic_update_slice(var.value, new.astype(var.value.dtype), start)
    self.cache_index.value = index + k_BTKH.shape[1]
    b, s = self.cached_segment_ids.value.shape
    if prefix_BT is not None:  # a prompt attends bidirectionally only within itself
      prefix_BT = jax.lax.dynamic_update_slice(jnp.zeros((b, s), jnp.int32),
                                               prefix_BT.astype(jnp.int32), (0, index))
    return (self.cached_key.value, self.cached_value.value, self.cached_segment_ids.value,
            self.cached_positions.value, prefix_BT)
