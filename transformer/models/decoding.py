"""Greedy generation with the KV cache, for decoder-only and encoder-decoder models.

The model's self-attention caches are allocated for prompt + new tokens; the prompt is written in
one call (prefill), then each new token costs one single-position call. `jax.lax.fori_loop` keeps
the whole loop inside one compiled program.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.errors import ConfigError


def _positions(batch, start, length):
  return jnp.broadcast_to(start + jnp.arange(length, dtype=jnp.int32), (batch, length))


def _loop(model, num_steps, start, step_fn, carry):
  """fori_loop over step_fn(model, i, carry), threading the model's (cache) state through."""
  graphdef, state = nnx.split(model)

  def body(i, loop_carry):
    state, carry = loop_carry
    m = nnx.merge(graphdef, state)
    carry = step_fn(m, i, carry)
    return nnx.state(m), carry
  _, carry = jax.lax.fori_loop(start, num_steps, body, (state, carry))
  return carry


@jax.jit(static_argnames=('graphdef', 'max_new_tokens', 'eos_id', 'prefix_lm'))
def _generate(graphdef, state, prompt_BP, max_new_tokens, eos_id, prefix_lm):
  model = nnx.merge(graphdef, state)  # a private copy: the caller's model gets no caches
  b, p = prompt_BP.shape
  model.init_cache(b, p + max_new_tokens)
  ones = jnp.ones((b, p), jnp.int32)
  logits = model(prompt_BP, ones, _positions(b, 0, p), ones if prefix_lm else None, decode=True)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

  def step(model, i, carry):
    tokens_BN, logits_BNV, done_B = carry
    token_B = tokens_BN[:, i - 1]
    out = model(token_B[:, None], jnp.ones((b, 1), jnp.int32), _positions(b, p + i - 1, 1),
                decode=True)
    nxt = jnp.argmax(out[:, 0], axis=-1).astype(jnp.int32)
    done_B = done_B | (token_B == eos_id)
    nxt = jnp.where(done_B, 0, nxt)
    return tokens_BN.at[:, i].set(nxt), logits_BNV.at[:, i].set(out[:, 0]), done_B

  tokens = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(first)
  all_logits = jnp.zeros((b, max_new_tokens, logits.shape[-1]), jnp.float32)
  all_logits = all_logits.at[:, 0].set(logits[:, -1])
  tokens, all_logits, _ = _loop(model, max_new_tokens, 1, step,
                                (tokens, all_logits, jnp.zeros((b,), bool)))
  return tokens, all_logits


def generate(model, prompt, *, max_new_tokens, eos_id=1, prefix_lm=False, return_logits=False):
  """Greedy continuation of `prompt` [B, P] (every row a real, unpadded prompt) by a DecoderOnly.

  Returns new tokens [B, max_new_tokens] (0 after an EOS) and, with return_logits, the float32
  logits that chose each of them. prefix_lm: the prompt attends to itself bidirectionally.
  With learned positions, P + max_new_tokens must fit in model.max_len (else a ConfigError).
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  hp, p = model.hp, prompt.shape[1]
  if hp.positions == 'learned' and p + max_new_tokens > hp.max_len:
    raise ConfigError(f'generate: a {p}-token prompt + max_new_tokens={max_new_tokens} is past '
                      f'the model.max_len={hp.max_len} learned positions; ask for at most '
                      f'{max(hp.max_len - p, 0)} new tokens or shorten the prompt')
  graphdef, state = nnx.split(model)
  tokens, logits = _generate(graphdef, state, prompt, max_new_tokens, eos_id, prefix_lm)
  return (tokens, logits) if return_logits else tokens


@jax.jit(static_argnames=('graphdef', 'max_new_tokens', 'eos_id'))
def _generate_seq2seq(graphdef, state, inputs_BS, inputs_segment_ids_BS, start_id, max_new_tokens,
                      eos_id):
  model = nnx.merge(graphdef, state)
  b = inputs_BS.shape[0]
  encoded = model.encode(inputs_BS, inputs_segment_ids_BS)
  model.init_cache(b, max_new_tokens)

  def step(model, i, carry):
    tokens_BN, logits_BNV, done_B = carry
    prev_B = jnp.where(i == 0, start_id, tokens_BN[:, jnp.maximum(i - 1, 0)])
    out = model.decode(encoded, prev_B[:, None], inputs_segment_ids=inputs_segment_ids_BS,
                       decoder_positions=_positions(b, i, 1), decode=True)
    nxt = jnp.argmax(out[:, 0], axis=-1).astype(jnp.int32)
    done_B = done_B | ((i > 0) & (prev_B == eos_id))
    nxt = jnp.where(done_B, 0, nxt)
    return tokens_BN.at[:, i].set(nxt), logits_BNV.at[:, i].set(out[:, 0]), done_B

  vocab = model.hp.vocab_size
  carry = (jnp.zeros((b, max_new_tokens), jnp.int32),
           jnp.zeros((b, max_new_tokens, vocab), jnp.float32), jnp.zeros((b,), bool))
  tokens, logits, _ = _loop(model, max_new_tokens, 0, step, carry)
  return tokens, logits


def generate_seq2seq(model, inputs, inputs_segment_ids=None, *, max_new_tokens, eos_id=1,
                     return_logits=False, start_id=None):
  """Greedy decoding of an EncoderDecoder from `inputs` [B, S] (segment ids 0 on padding).

  The decoder starts from `start_id` (default model.hp.decoder_start_id: 0 for T5, 2 for an
  imported BART), as the training objectives' shifted targets do.
  """
  start_id = model.hp.decoder_start_id if start_id is None else start_id
  inputs = jnp.asarray(inputs, jnp.int32)
  if inputs_segment_ids is None:
    inputs_segment_ids = (inputs != 0).astype(jnp.int32)
  graphdef, state = nnx.split(model)
  tokens, logits = _generate_seq2seq(graphdef, state, inputs,
                                     jnp.asarray(inputs_segment_ids, jnp.int32),
                                     jnp.int32(start_id), max_new_tokens, eos_id)
  return (tokens, logits) if return_logits else tokens
