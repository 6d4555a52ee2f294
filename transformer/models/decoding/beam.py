"""Beam search as pure functions on a fixed-size beam state (Hugging Face's vectorised algorithm).

Per input, `beam_size` K live beams (sums of log-probabilities) and K finished hypotheses
(length-normalised scores). One step, given the live beams' next-token log-probabilities:

  1. the 2K best of the K x V continuations by summed log-probability;
  2. the best K of them that neither end in EOS nor reach max_new_tokens live on;
  3. those among the best K that do end become finished, scored log P / penalty(length), and
     the K best finished hypotheses are kept (an example that has stopped adds none);
  4. an example stops when its live beams cannot beat its worst finished one (spec.early_stopping).

At its limit (max_new_tokens) every continuation ends, so live beams compete with the finished.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

NEG = -1.0e9   # the score of an empty slot (HF's placeholder value)


class BeamState(NamedTuple):
  alive_BKN: jax.Array      # live beams' tokens (0 past the current step)
  alive_BK: jax.Array       # their summed log-probabilities, best first
  done_BKN: jax.Array       # finished hypotheses' tokens (0 after EOS)
  done_BK: jax.Array        # their length-normalised scores, best first (NEG: empty slot)
  filled_BK: jax.Array      # whether a finished slot holds a hypothesis
  open_B: jax.Array         # whether an example may still improve


def init(batch, beams, length):
  """No finished hypotheses; one live beam of score 0 per input (the rest start at NEG, so the
  first step expands the prompt once, not K times)."""
  zeros = jnp.zeros((batch, beams, length), jnp.int32)
  alive = jnp.full((batch, beams), NEG, jnp.float32).at[:, 0].set(0.0)
  return BeamState(zeros, alive, zeros, jnp.full((batch, beams), NEG, jnp.float32),
                   jnp.zeros((batch, beams), bool), jnp.ones((batch,), bool))


def penalty(length, spec):
  """The length normaliser of `spec.length_norm` for hypotheses of `length` new tokens."""
  length = jnp.asarray(length, jnp.float32)
  base = (5.0 + length) / 6.0 if spec.length_norm == 'gnmt' else length
  return base ** spec.alpha


def _take(x_BK_, index_BJ):
  """Entries `index_BJ` along axis 1 of x [B, K, ...] -> [B, J, ...]."""
  index = index_BJ.reshape(index_BJ.shape + (1,) * (x_BK_.ndim - 2))
  return jnp.take_along_axis(x_BK_, index, axis=1)


def step(state, logp_BKV, i, spec, *, eos_id, limit_B):
  """Choose new token `i` of every beam (example b ends at limit_B[b] new tokens); returns
  (state, parents [B*K]): the row b * K + k of the beam each new live beam extends."""
  b, k, v = logp_BKV.shape
  scores_BC, index_BC = jax.lax.top_k((state.alive_BK[:, :, None] + logp_BKV).reshape(b, k * v),
                                      2 * k)
  beam_BC, token_BC = index_BC // v, (index_BC % v).astype(jnp.int32)
  seqs_BCN = _take(state.alive_BKN, beam_BC).at[:, :, i].set(token_BC)
  ends_BC = (token_BC == eos_id) | (i + 1 >= limit_B[:, None])
  alive_BK, keep_BK = jax.lax.top_k(jnp.where(ends_BC, NEG + scores_BC, scores_BC), k)
  parents = (_take(beam_BC, keep_BK) + jnp.arange(b)[:, None] * k).reshape(-1)
  full_B = jnp.all(state.filled_BK, axis=1) & (spec.early_stopping == 'true')
  new_BC = (ends_BC & (jnp.arange(2 * k) < k)[None] & (scores_BC > NEG / 2)
            & (state.open_B & ~full_B)[:, None])
  normed_BC = jnp.where(new_BC, scores_BC / penalty(i + 1, spec), NEG)
  merged = jnp.concatenate([state.done_BK, normed_BC], axis=1)
  done_BK, best_BK = jax.lax.top_k(merged, k)
  done_BKN = _take(jnp.concatenate([state.done_BKN, seqs_BCN], axis=1), best_BK)
  filled_BK = _take(jnp.concatenate([state.filled_BK, new_BC], axis=1), best_BK)
  state = BeamState(_take(seqs_BCN, keep_BK), alive_BK, done_BKN, done_BK, filled_BK,
                    state.open_B)
  return state._replace(open_B=_still_open(state, i + 1, spec, limit_B)), parents


def _still_open(state, length, spec, limit_B):
  """Whether each example's best live beam may still beat its worst finished hypothesis."""
  bound = limit_B if spec.early_stopping == 'never' and spec.alpha > 0 else length
  best_B = state.alive_BK[:, 0] / penalty(bound, spec)   # the longest a live beam can grow
  worst_B = jnp.min(state.done_BK, axis=1)
  improvable_B = ~jnp.all(state.filled_BK, axis=1) | (best_B > worst_B)
  return state.open_B & improvable_B & (length < limit_B)


def running(state, spec):
  """Whether any example's search goes on (the caller also stops at max_new_tokens)."""
  stop_all = (spec.early_stopping == 'true') & jnp.all(state.filled_BK)
  return jnp.any(state.open_B) & ~stop_all


def best(state, count):
  """(tokens [B, count, N], scores [B, count]): the `count` best finished hypotheses."""
  return state.done_BKN[:, :count], state.done_BK[:, :count]
