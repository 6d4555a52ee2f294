"""How a model produces next-token logits while decoding: one class per family and cache mode.

Every stepper has the same four pure methods, so the strategies (loops.py) never see a model:

  start()                  -> (logits [B, V] for new token 0, cache)    the prompt / encoder, once
  step(cache, token_R, i)  -> (logits [R, V] for new token i + 1, cache) feed new token i
  expand(cache, rows_R)    -> cache with rows `rows_R` of B (each input repeated into beams)
  reorder(cache, rows_R)   -> cache whose row r continues row rows_R[r] (beam parents)

`cache` is a pytree: the model's nnx.Cache state (KV caches, the cross-attention memory) or, in
the 'none' mode, the whole token buffer that is run through the model again at every step: the
reference that the cached modes must equal. Cache modes: 'full' (self-attention KV cache and
cross-attention keys/values computed once), 'self' (KV cache; cross-attention keys/values
projected from the encoder output at every step), 'none' (no cache: full recompute).
"""

import jax
import jax.numpy as jnp
from flax import nnx

CACHE_MODES = ('full', 'self', 'none')


def _rows(tree, rows_R):
  return jax.tree.map(lambda x: jnp.take(x, rows_R, axis=0), tree)


def _at(x_BL_, index_B):
  """x[b, index_B[b]] for every row b."""
  return jnp.take_along_axis(x_BL_, index_B.reshape((-1,) + (1,) * (x_BL_.ndim - 1)), axis=1)[:, 0]


class _Cached:
  """Shared by the cached steppers: the model's Cache state is the carried cache (the rest of
  the model rides along unchanged: nnx transforms inside the loop need it from the loop)."""

  def __init__(self, graphdef, state, arrays, options):
    self.model = nnx.merge(graphdef, state)   # a private copy: the caller's model stays uncached
    self.arrays, self.options = arrays, options
    self.graphdef = None

  def _split(self, model, fixed, rows):
    self.graphdef, cache, rest = nnx.split(model, nnx.Cache, ...)
    return dict(model=cache, rest=rest, fixed=fixed, rows=rows)

  def _merge(self, cache):
    return nnx.merge(self.graphdef, cache['model'], cache['rest'])

  def expand(self, cache, rows_R):
    model = self._merge(cache)
    model.reorder_cache(rows_R, **self._memory())
    return dict(cache, model=nnx.state(model, nnx.Cache), fixed=_rows(cache['fixed'], rows_R),
                rows=_rows(cache['rows'], rows_R))

  def reorder(self, cache, rows_R):
    model = self._merge(cache)
    model.reorder_cache(rows_R)
    return dict(cache, model=nnx.state(model, nnx.Cache), rows=_rows(cache['rows'], rows_R))

  def _memory(self):
    return {}


class CachedDecoder(_Cached):
  """DecoderOnly with a KV cache of options['cache_len'] slots: the right-padded prompt (segment
  ids 0 on padding) fills the first slots in one call, then each new token takes one slot."""

  def start(self):
    prompt_BP, segs_BP = self.arrays['prompt'], self.arrays['segment_ids']
    b, p = prompt_BP.shape
    self.model.init_cache(b, self.options['cache_len'])
    positions_BP = jnp.where(segs_BP > 0, jnp.arange(p, dtype=jnp.int32)[None], 0)
    logits = self.model(prompt_BP, segs_BP, positions_BP,
                        segs_BP if self.options['prefix_lm'] else None, decode=True)
    lengths_B = jnp.sum(segs_BP > 0, axis=1).astype(jnp.int32)
    return _at(logits, lengths_B - 1), self._split(self.model, {}, dict(lengths=lengths_B))

  def step(self, cache, token_R, i):
    model = self._merge(cache)
    r = token_R.shape[0]
    positions = (cache['rows']['lengths'] + i)[:, None]
    logits = model(token_R[:, None], jnp.ones((r, 1), jnp.int32), positions, decode=True)
    return logits[:, 0], dict(cache, model=nnx.state(model, nnx.Cache))


class CachedEncoderDecoder(_Cached):
  """EncoderDecoder: the encoder runs once; the decoder starts from options['start_id'] at
  position 0 and feeds new token i at position i + 1. options['cross_cache']: the encoder
  output's keys/values are projected once (else at every step, from the kept encoder output)."""

  def _memory(self):
    return dict(memory=True)

  def start(self):
    inputs_BS, segs_BS = self.arrays['inputs'], self.arrays['segment_ids']
    b = inputs_BS.shape[0]
    encoded = self.model.encode(inputs_BS, segs_BS)
    memory = self.options['cross_cache']
    self.model.init_cache(b, self.options['cache_len'], encoded if memory else None, segs_BS)
    fixed = dict(segs=segs_BS) if memory else dict(encoded=encoded, segs=segs_BS)
    start_B = jnp.full((b,), self.options['start_id'], jnp.int32)
    logits = self._logits(self.model, fixed, start_B, jnp.zeros((b,), jnp.int32))
    return logits, self._split(self.model, fixed, {})

  @staticmethod
  def _logits(model, fixed, token_R, position_R):
    return model.decode(fixed.get('encoded'), token_R[:, None], inputs_segment_ids=fixed['segs'],
                        decoder_positions=position_R[:, None], decode=True)[:, 0]

  def step(self, cache, token_R, i):
    model = self._merge(cache)
    position_R = jnp.full(token_R.shape, i + 1, jnp.int32)
    logits = self._logits(model, cache['fixed'], token_R, position_R)
    return logits, dict(cache, model=nnx.state(model, nnx.Cache))


class _Recompute:
  """Shared by the uncached steppers: a token buffer re-read by the whole model every step.
  cache = {'model': the model's state (carried, for nnx transforms), 'rows': per-row arrays}."""

  def __init__(self, graphdef, state, arrays, options):
    self.graphdef, self.state = graphdef, state
    self.arrays, self.options = arrays, options

  def _start(self, rows, last_R):
    cache = dict(model=self.state, rows=rows)
    return _at(self._forward(cache, last_R), last_R), cache

  def expand(self, cache, rows_R):
    return dict(cache, rows=_rows(cache['rows'], rows_R))

  reorder = expand

  def step(self, cache, token_R, i):
    rows = cache['rows']
    slot_R = rows['first'] + i
    buffer = rows['buffer'].at[jnp.arange(token_R.shape[0]), slot_R].set(token_R)
    cache = dict(cache, rows=dict(rows, buffer=buffer))
    return _at(self._forward(cache, slot_R), slot_R), cache


class RecomputeDecoder(_Recompute):
  """DecoderOnly without a cache: prompt and new tokens in one buffer, all re-run each step."""

  def start(self):
    prompt_BP, segs_BP = self.arrays['prompt'], self.arrays['segment_ids']
    lengths_B = jnp.sum(segs_BP > 0, axis=1).astype(jnp.int32)
    buffer = jnp.pad(prompt_BP, ((0, 0), (0, self.options['max_new_tokens'])))
    return self._start(dict(buffer=buffer, first=lengths_B, lengths=lengths_B), lengths_B - 1)

  def _forward(self, cache, last_R):
    """Logits of the buffer whose tokens up to `last_R` (per row) are real."""
    rows = cache['rows']
    slots = jnp.arange(rows['buffer'].shape[1])[None]
    segs = (slots <= last_R[:, None]).astype(jnp.int32)
    prefix = (slots < rows['lengths'][:, None]).astype(jnp.int32)
    positions = jnp.broadcast_to(slots, rows['buffer'].shape)
    model = nnx.merge(self.graphdef, cache['model'])
    return model(rows['buffer'], segs, positions, prefix if self.options['prefix_lm'] else None)


class RecomputeEncoderDecoder(_Recompute):
  """EncoderDecoder without a cache: the whole model (encoder too) runs at every step."""

  def start(self):
    b = self.arrays['inputs'].shape[0]
    buffer = jnp.zeros((b, self.options['max_new_tokens'] + 1), jnp.int32)
    buffer = buffer.at[:, 0].set(self.options['start_id'])
    rows = dict(buffer=buffer, first=jnp.ones((b,), jnp.int32), inputs=self.arrays['inputs'],
                segs=self.arrays['segment_ids'])
    return self._start(rows, jnp.zeros((b,), jnp.int32))

  def _forward(self, cache, last_R):
    rows = cache['rows']
    segs = (jnp.arange(rows['buffer'].shape[1])[None] <= last_R[:, None]).astype(jnp.int32)
    model = nnx.merge(self.graphdef, cache['model'])
    return model(rows['inputs'], rows['buffer'], inputs_segment_ids=rows['segs'],
                 decoder_segment_ids=segs)


def stepper(family, cache_mode):
  """The stepper class for a model family ('decoder' | 'encoder_decoder') and cache mode."""
  if family == 'decoder':
    return RecomputeDecoder if cache_mode == 'none' else CachedDecoder
  return RecomputeEncoderDecoder if cache_mode == 'none' else CachedEncoderDecoder
