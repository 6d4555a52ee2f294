"""Token choice from logits: greedy, or sampling after temperature, top-k and top-p (nucleus).

Pure functions on [R, V] float logits, applied in Hugging Face's order: temperature, then top-k,
then top-p. A token that a cut removes gets -inf, so it is never drawn; so does every id at or
past a `vocab_limit` (`limit`: rows of the model that the tokenizer has no token for).
"""

import jax
import jax.numpy as jnp


def limit(logits_RV, vocab_limit):
  """`logits_RV` with the ids >= `vocab_limit` at -inf (unchanged when None or >= V)."""
  v = logits_RV.shape[-1]
  if vocab_limit is None or vocab_limit >= v:
    return logits_RV
  return jnp.where(jnp.arange(v) < vocab_limit, logits_RV, -jnp.inf)


def warp(logits_RV, *, temperature=1.0, top_k=0, top_p=1.0):
  """The logits sampling draws from: divided by `temperature`, then all but the `top_k` most
  likely tokens and then all but the nucleus (the most likely tokens whose probability reaches
  `top_p`, the token that crosses it included) set to -inf. Ties at a cut stay in."""
  logits_RV = logits_RV.astype(jnp.float32) / temperature
  if top_k and top_k < logits_RV.shape[-1]:
    kth_R1 = jax.lax.top_k(logits_RV, top_k)[0][:, -1:]
    logits_RV = jnp.where(logits_RV < kth_R1, -jnp.inf, logits_RV)
  if top_p < 1.0:
    sorted_RV = jnp.sort(logits_RV, axis=-1)[:, ::-1]
    probs_RV = jax.nn.softmax(sorted_RV, axis=-1)
    before_RV = jnp.cumsum(probs_RV, axis=-1) - probs_RV   # probability of the likelier tokens
    kept_RV = before_RV < top_p                            # the most likely token always is
    smallest_R1 = jnp.min(jnp.where(kept_RV, sorted_RV, jnp.inf), axis=-1, keepdims=True)
    logits_RV = jnp.where(logits_RV < smallest_R1, -jnp.inf, logits_RV)
  return logits_RV


def choose(logits_RV, key, spec):
  """One token per row [R] (int32): the argmax for greedy, else a draw from `warp`'s logits by
  `key`: one PRNG key for every row, or [R] keys, one per row (a row's draw then depends on its
  own key and logits only, not on the other rows of the batch)."""
  if spec.strategy == 'greedy':
    return jnp.argmax(logits_RV, axis=-1).astype(jnp.int32)
  warped = warp(logits_RV, temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p)
  if jnp.ndim(key) == 0:
    return jax.random.categorical(key, warped, axis=-1).astype(jnp.int32)
  return jax.vmap(jax.random.categorical)(key, warped).astype(jnp.int32)
