"""Decoding for decoder-only and encoder-decoder models: greedy, sampling, beam search.

  out = decoding.decode(model, inputs, max_new_tokens=32, eos_id=1, spec=Spec('beam'))
  out.tokens [B, R, N], out.scores [B, R], out.lengths [B, R]   (R = spec.num_return)
  tokens = decoding.generate(model, prompt, max_new_tokens=32)          # DecoderOnly, best [B, N]
  tokens = decoding.generate_seq2seq(model, inputs, segs, max_new_tokens=32)  # EncoderDecoder

One jitted program per batch shape: a fixed-size KV cache and a `jax.lax.while_loop` (loops.py)
that stops once every row has ended. A DecoderOnly reads right-padded prompts (`segment_ids` 0
on padding, so prompts of any lengths share a batch) and continues each from its own last
token; `prefix_lm` lets the prompt attend to itself bidirectionally. An EncoderDecoder encodes
the inputs once, projects the encoder output into every cross-attention's keys/values once,
and decodes from model.hp.decoder_start_id. Rows end at their own EOS and stop changing.

Decoding for text passes `vocab_limit=tokenizer.vocab_size`: a model may have more rows than
its tokenizer has ids (a published vocabulary over a smaller tokenizer; T5's 32,128 rows for
32,100 tokens), and no strategy then chooses an id past it. Sampling passes `index`, each
input's place in the whole request (its line of an input file, its example of an eval set):
an input's noise follows it, so a prompt listed twice draws two samples whatever the batches.

Limits are checked before anything is compiled, each a one-line ConfigError: a prompt plus
max_new_tokens beyond a learned position table (model.max_len) or beyond `cache_len`.
`cache='self'` (cross-attention recomputed every step) and `cache='none'` (the whole model
re-run every step) exist for benchmarks and as the reference the cached decoding must equal.
"""

import numpy as np
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

from transformer.errors import ConfigError
from transformer.models.decoding import loops
from transformer.models.decoding.loops import Output
from transformer.models.decoding.spec import (EARLY_STOPPING, GREEDY, LENGTH_NORMS, STRATEGIES,
                                              Spec)
from transformer.models.decoding.steppers import CACHE_MODES


def _segment_ids(tokens, segment_ids):
  """Segment ids of right-padded rows (1 on the tokens, 0 after); all ones when not given."""
  if segment_ids is None:
    return jnp.ones(tokens.shape, jnp.int32)
  segs = np.asarray(segment_ids) != 0
  if segs.shape != tokens.shape:
    raise ConfigError(f'decoding: segment ids of shape {segs.shape} for inputs of shape '
                      f'{tuple(tokens.shape)}; give one per token')
  lengths = segs.sum(axis=1)
  if (lengths == 0).any() or (segs != (np.arange(segs.shape[1])[None] < lengths[:, None])).any():
    raise ConfigError('decoding: every input row needs at least one token, right-padded '
                      '(segment ids 1 then 0)')
  return jnp.asarray(segs, jnp.int32)


def _limits(model, lengths, width, max_new_tokens, cache_len, spec, stop_at_table_end):
  """(cache length, per-row limits [B]) after the up-front checks (one-line ConfigErrors)."""
  hp, family = model.hp, model.hp.family
  if family not in ('decoder', 'encoder_decoder'):
    raise ConfigError(f'decoding: model.family={family!r} does not generate; use a decoder or '
                      'encoder_decoder model')
  if max_new_tokens < 1:
    raise ConfigError(f'decoding: max_new_tokens={max_new_tokens}; ask for at least 1 token')
  spec.validate()
  longest = int(lengths.max())
  limits = np.full(lengths.shape, max_new_tokens, np.int32)
  if hp.positions == 'learned' and family == 'encoder_decoder' and longest > hp.max_len:
    raise ConfigError(f'generate_seq2seq: {longest}-token inputs are past the model.max_len='
                      f'{hp.max_len} learned positions; cut the inputs to {hp.max_len} tokens')
  # Positions the output takes: prompt and new tokens (decoder-only), or the start token and
  # every new token but the last (encoder-decoder).
  room = hp.max_len - (lengths if family == 'decoder' else np.zeros_like(lengths))
  if hp.positions == 'learned' and stop_at_table_end:
    limits = np.clip(room, 1, max_new_tokens).astype(np.int32)
  elif hp.positions == 'learned' and (max_new_tokens > room).any():
    what = (f'a {longest}-token prompt + max_new_tokens={max_new_tokens}' if family == 'decoder'
            else f'max_new_tokens={max_new_tokens}')
    raise ConfigError(f'generate: {what} is past the model.max_len={hp.max_len} learned '
                      f'positions; ask for at most {max(int(room.min()), 0)} new tokens or '
                      'shorten the prompt')
  needed = (width if family == 'decoder' else 0) + max_new_tokens
  if cache_len is not None and needed > cache_len:
    raise ConfigError(f'generate: {width}-token inputs + max_new_tokens={max_new_tokens} need '
                      f'{needed} cache slots, past cache_len={cache_len}; raise cache_len or '
                      'ask for fewer tokens')
  return (needed if cache_len is None else cache_len), limits


def _index(index, batch):
  """[B] int32: each input's index in the request (default 0..B-1), checked."""
  if index is None:
    return jnp.arange(batch, dtype=jnp.int32)
  index = np.asarray(index)
  if index.shape != (batch,):
    raise ConfigError(f'decoding: index of shape {index.shape} for {batch} inputs; give one '
                      'per input')
  return jnp.asarray(index, jnp.int32)


def _fetchable(tree):
  """Arrays spread over several processes gathered whole onto each (multi-process decoding)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return x
  return jax.tree.map(get, tree)


def decode(model, inputs, *, max_new_tokens, eos_id=1, segment_ids=None, spec=GREEDY,
           prefix_lm=False, start_id=None, cache_len=None, cache='full', return_logits=False,
           stop_at_table_end=False, vocab_limit=None, index=None):
  """Decode `inputs` [B, L] (prompts for a DecoderOnly, sources for an EncoderDecoder) with
  `spec` (None: greedy); returns an Output (tokens [B, R, N], scores, lengths; logits [B, N, V]
  with return_logits, greedy and sampling only: rows past their EOS undefined, -inf past
  vocab_limit).

  segment_ids: 1 on tokens, 0 on right padding (default: no padding). prefix_lm: the prompt
  attends to itself bidirectionally (decoder-only). start_id: the decoder's first input
  (default model.hp.decoder_start_id). cache_len: slots of the KV cache (default: exactly what
  the request needs). cache: one of CACHE_MODES. stop_at_table_end: with learned positions,
  each row ends where the table does (at least 1 token) instead of the request being refused.
  vocab_limit: ids >= it are never chosen (the tokenizer's size; None: every model row).
  index: [B] each input's index in the whole request, which its sampling noise follows
  (default 0..B-1: give it when a request is decoded in several batches).
  """
  spec = spec or GREEDY
  if cache not in CACHE_MODES:
    raise ConfigError(f'decoding: cache={cache!r}; choose one of {", ".join(CACHE_MODES)}')
  inputs = jnp.asarray(inputs, jnp.int32)
  segs = _segment_ids(inputs, segment_ids)
  cache_len, limits = _limits(model, np.asarray(segs).sum(axis=1), inputs.shape[1],
                              max_new_tokens, cache_len, spec, stop_at_table_end)
  family = model.hp.family
  if vocab_limit is not None and vocab_limit < 1:
    raise ConfigError(f'decoding: vocab_limit={vocab_limit}; give the tokenizer size (>= 1)')
  if vocab_limit is not None and vocab_limit >= model.hp.vocab_size:
    vocab_limit = None   # nothing to mask: one compiled program for both
  start_id = model.hp.decoder_start_id if start_id is None else start_id
  options = (('cache_len', cache_len), ('prefix_lm', bool(prefix_lm)),
             ('start_id', int(start_id)), ('cross_cache', cache == 'full'),
             ('max_new_tokens', max_new_tokens))
  arrays = dict(segment_ids=segs, limit=jnp.asarray(limits), index=_index(index, len(limits)),
                **{'prompt' if family == 'decoder' else 'inputs': inputs})
  graphdef, state = loops.split(model)
  out = loops.run(graphdef, state, arrays, family=family, cache_mode=cache, options=options,
                  spec=spec, max_new_tokens=max_new_tokens, eos_id=int(eos_id),
                  return_logits=return_logits and spec.strategy != 'beam',
                  vocab_limit=None if vocab_limit is None else int(vocab_limit))
  return _fetchable(out)


def generate(model, prompt, *, max_new_tokens, eos_id=1, prefix_lm=False, return_logits=False,
             segment_ids=None, spec=GREEDY, **kwargs):
  """The best continuation [B, N] of each prompt by a DecoderOnly (0 after an EOS) and, with
  return_logits (greedy / sampling), the float32 logits that chose each token. With learned
  positions, P + max_new_tokens must fit in model.max_len (else a ConfigError)."""
  out = decode(model, prompt, max_new_tokens=max_new_tokens, eos_id=eos_id, prefix_lm=prefix_lm,
               segment_ids=segment_ids, spec=spec, return_logits=return_logits, **kwargs)
  return (out.tokens[:, 0], out.logits) if return_logits else out.tokens[:, 0]


def generate_seq2seq(model, inputs, inputs_segment_ids=None, *, max_new_tokens, eos_id=1,
                     return_logits=False, start_id=None, spec=GREEDY, **kwargs):
  """The best output [B, N] of an EncoderDecoder for `inputs` [B, S] (segment ids 0 on
  padding), decoded from `start_id` (default model.hp.decoder_start_id: 0 for T5, 2 for an
  imported BART), as the training objectives' shifted targets start."""
  if inputs_segment_ids is None:
    inputs_segment_ids = np.asarray(inputs) != 0
  out = decode(model, inputs, max_new_tokens=max_new_tokens, eos_id=eos_id,
               segment_ids=inputs_segment_ids, spec=spec, start_id=start_id,
               return_logits=return_logits, **kwargs)
  return (out.tokens[:, 0], out.logits) if return_logits else out.tokens[:, 0]


__all__ = ['CACHE_MODES', 'EARLY_STOPPING', 'GREEDY', 'LENGTH_NORMS', 'Output', 'STRATEGIES',
           'Spec', 'decode', 'generate', 'generate_seq2seq']
