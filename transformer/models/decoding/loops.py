"""The decoding loops: one `jax.lax.while_loop` per strategy over a stepper (steppers.py).

Both stop when max_new_tokens are chosen or when nothing can change any more (every row has
ended / every example's beam search has stopped). A row ends at its EOS or at its own limit
(arrays['limit'], at most max_new_tokens: the end of a learned position table). Rows that have
ended stop changing: their later tokens are 0 and their scores stay as they were.

Ids at or past `vocab_limit` (model rows the tokenizer lacks) are never chosen: their logits
are -inf before greedy, sampling and beam search alike. A sampled row draws its noise from
spec.seed, its input's index (arrays['index']: the input's place in the whole request, not its
row in this batch) and its return number, so an input draws the same samples in any batch.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.models.decoding import beam, sampling, steppers


class Output(NamedTuple):
  """What `decode` returns: R = spec.num_return outputs per input, best first for beams."""
  tokens: jax.Array            # [B, R, N] int32 new tokens, 0 after each row's EOS
  scores: jax.Array            # [B, R] float32: beams: log P / length penalty; else log P
  lengths: jax.Array           # [B, R] int32 new tokens up to and including the EOS
  logits: Optional[jax.Array] = None   # [B, N, V] float32 (greedy / sample with return_logits)


def lengths_of(tokens_BRN, eos_id):
  """Tokens up to and including the first EOS (all N when there is none)."""
  is_eos = tokens_BRN == eos_id
  first = jnp.argmax(is_eos, axis=-1).astype(jnp.int32) + 1
  return jnp.where(jnp.any(is_eos, axis=-1), first, tokens_BRN.shape[-1])


def row_keys(seed, index_B, m):
  """[B * m] PRNG keys: row (b, j), return j of input b, has key(seed) folded with index_B[b]
  and then with j."""
  index_R = jnp.repeat(index_B, m)
  return_R = jnp.tile(jnp.arange(m), index_B.shape[0])
  key = jax.random.key(seed)
  return jax.vmap(lambda i, j: jax.random.fold_in(jax.random.fold_in(key, i), j))(index_R,
                                                                                 return_R)


def sample(stepper, spec, *, max_new_tokens, eos_id, return_logits, vocab_limit=None):
  """Greedy or sampled decoding of spec.num_return rows per input."""
  logits_RV, cache = stepper.start()
  b, m, n = logits_RV.shape[0], spec.num_return, max_new_tokens
  limit_R = jnp.repeat(stepper.arrays['limit'], m)
  if m > 1:
    rows = jnp.repeat(jnp.arange(b), m)
    logits_RV, cache = logits_RV[rows], stepper.expand(cache, rows)
  r = b * m
  keys_R = (row_keys(spec.seed, stepper.arrays['index'], m) if spec.strategy == 'sample'
            else None)

  def advance(carry, logits_RV):
    """Choose new token i of every row from its logits."""
    i, tokens_RN, done_R, score_R, buffer, cache = carry
    logits_RV = sampling.limit(logits_RV, vocab_limit)
    step_keys_R = (None if keys_R is None else
                   jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_R, i))
    token_R = sampling.choose(logits_RV, step_keys_R, spec)
    logp_R = jnp.take_along_axis(jax.nn.log_softmax(logits_RV.astype(jnp.float32)),
                                 token_R[:, None], axis=-1)[:, 0]
    token_R = jnp.where(done_R, 0, token_R)
    score_R = score_R + jnp.where(done_R, 0.0, logp_R)
    if buffer is not None:
      buffer = buffer.at[:, i].set(logits_RV.astype(jnp.float32))
    done_R = done_R | (token_R == eos_id) | (i + 1 >= limit_R)
    return i + 1, tokens_RN.at[:, i].set(token_R), done_R, score_R, buffer, cache

  def body(carry):
    i, tokens_RN, *_, cache = carry
    logits_RV, cache = stepper.step(cache, tokens_RN[:, i - 1], i - 1)
    return advance(carry[:-1] + (cache,), logits_RV)

  buffer = jnp.zeros((r, n, logits_RV.shape[-1]), jnp.float32) if return_logits else None
  carry = advance((jnp.int32(0), jnp.zeros((r, n), jnp.int32), jnp.zeros((r,), bool),
                   jnp.zeros((r,), jnp.float32), buffer, cache), logits_RV)
  carry = jax.lax.while_loop(lambda c: (c[0] < n) & ~jnp.all(c[2]), body, carry)
  _, tokens_RN, _, score_R, buffer, _ = carry
  tokens = tokens_RN.reshape(b, m, n)
  lengths = jnp.minimum(lengths_of(tokens, eos_id), limit_R.reshape(b, m))
  return Output(tokens, score_R.reshape(b, m), lengths, buffer)


def beam_search(stepper, spec, *, max_new_tokens, eos_id, vocab_limit=None):
  """spec.beam_size beams per input; the spec.num_return best finished hypotheses."""
  logits_BV, cache = stepper.start()
  b, k, n = logits_BV.shape[0], spec.beam_size, max_new_tokens
  rows, limit_B = jnp.repeat(jnp.arange(b), k), stepper.arrays['limit']
  cache = stepper.expand(cache, rows)

  def advance(i, state, cache, logits_RV):
    logits_RV = sampling.limit(logits_RV.astype(jnp.float32), vocab_limit)
    logp_BKV = jax.nn.log_softmax(logits_RV).reshape(b, k, -1)
    state, parents = beam.step(state, logp_BKV, i, spec, eos_id=eos_id, limit_B=limit_B)
    return i + 1, state, stepper.reorder(cache, parents)

  def body(carry):
    i, state, cache = carry
    logits_RV, cache = stepper.step(cache, state.alive_BKN[:, :, i - 1].reshape(-1), i - 1)
    return advance(i, state, cache, logits_RV)

  carry = advance(jnp.int32(0), beam.init(b, k, n), cache, logits_BV[rows])
  carry = jax.lax.while_loop(lambda c: (c[0] < n) & beam.running(c[1], spec), body, carry)
  tokens, scores = beam.best(carry[1], spec.num_return)
  return Output(tokens, scores, jnp.minimum(lengths_of(tokens, eos_id), limit_B[:, None]))


def _run(graphdef, state, arrays, *, family, cache_mode, options, spec, max_new_tokens, eos_id,
         return_logits, vocab_limit):
  """The whole decode of one batch as one program (jitted below: everything but the arrays
  and the parameters is static)."""
  stepper = steppers.stepper(family, cache_mode)(graphdef, state, arrays, dict(options))
  if spec.strategy == 'beam':
    return beam_search(stepper, spec, max_new_tokens=max_new_tokens, eos_id=eos_id,
                       vocab_limit=vocab_limit)
  return sample(stepper, spec, max_new_tokens=max_new_tokens, eos_id=eos_id,
                return_logits=return_logits, vocab_limit=vocab_limit)


run = jax.jit(_run, static_argnames=('graphdef', 'family', 'cache_mode', 'options', 'spec',
                                     'max_new_tokens', 'eos_id', 'return_logits',
                                     'vocab_limit'))


def split(model):
  """(graphdef, state) of `model` for `run`."""
  return nnx.split(model)
