"""Continuations scored by a decoder-only model: the log-likelihood arithmetic of zero- and
few-shot evaluation (GPT-3 sec. 2.4; the evaluation harnesses' `loglikelihood` requests).

  got = fewshot.score(model, [Request(prompt_ids, continuation_ids, bidirectional)], pad_id=0,
                      vocab_limit=tokenizer.vocab_size, batch_size=16)
  got[i].loglikelihood, got[i].tokens, got[i].greedy, got[i].truncated

A request is one row: the prompt as the objective lays it out (`objective.generation_prompt`:
[bos] + context; a prefix LM reads it bidirectionally, `bidirectional`) followed by the
continuation's ids. The row is scored as training scores text (position i predicts token i+1):

  loglikelihood  sum over the continuation's tokens of log softmax(logits)[token], float32, the
                 softmax over every row of the model's vocabulary (the model's distribution)
  tokens         how many tokens that sum covers (per-token normalisation divides by it)
  greedy         every continuation token is the argmax (over the tokenizer's ids) where it is
                 predicted: the greedy continuation of that many tokens IS the continuation
                 (teacher forcing and greedy decoding agree for as long as the tokens do), so
                 cloze exact match costs one forward pass instead of a decoding loop
  truncated      the row was longer than the model's learned position table (model.max_len):
                 the prompt lost tokens from its left, after its first token ([bos]), as the
                 harnesses cut from the left; a continuation that alone does not fit is refused

Batched: rows sorted by length, right-padded (segment ids 0) to a power-of-two width from 16
(at most the table), `batch_size` rows per call; the last call is filled with copies of its
first row, so each width compiles once. Padding never changes a row's numbers (segment ids keep
rows apart), so a request scores the same alone or in any batch.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.errors import ConfigError
from transformer.objectives import base, losses

Request = collections.namedtuple('Request', 'prompt continuation bidirectional')
Scored = collections.namedtuple('Scored', 'loglikelihood tokens greedy truncated')
MIN_WIDTH = 16


def position_limit(model):
  """The longest row the model can read: model.max_len with learned positions, else None."""
  hp = model.hp
  return hp.max_len if hp.positions == 'learned' else None


def fit(request, limit):
  """(prompt ids that fit with the continuation in `limit` tokens, whether any were cut)."""
  prompt, continuation = list(request.prompt), list(request.continuation)
  if not prompt or not continuation:
    raise ConfigError('few-shot scoring: a request needs a prompt and a continuation of at '
                      'least one token each; give non-empty choices and completions')
  if limit is None or len(prompt) + len(continuation) <= limit:
    return prompt, False
  keep = limit - len(continuation)
  if keep < 1:
    raise ConfigError(f'few-shot scoring: a {len(continuation)}-token continuation does not fit '
                      f'the model.max_len={limit} learned positions; shorten the choices or '
                      'completions')
  return prompt[:1] + prompt[len(prompt) - keep + 1:], True


def _width(length, limit):
  width = max(MIN_WIDTH, 1 << (max(length, 1) - 1).bit_length())
  return min(width, limit) if limit else width


@functools.partial(jax.jit, static_argnames=('graphdef', 'vocab_limit', 'use_prefix'))
def _forward(graphdef, state, tokens_BL, segs_BL, prefix_BL, weights_BL, *, vocab_limit,
             use_prefix):
  """(summed log-likelihood [B], all-greedy [B]) of the weighted next-token predictions."""
  model = nnx.merge(graphdef, state)
  kwargs = {'prefix': prefix_BL} if use_prefix else {}
  logits_BLV = model(tokens_BL, segs_BL, deterministic=True, **kwargs).astype(jnp.float32)
  labels_BL = losses.next_token_labels(tokens_BL)
  logp_BL = jnp.take_along_axis(jax.nn.log_softmax(logits_BLV, axis=-1), labels_BL[..., None],
                                axis=-1)[..., 0]
  best_BL = jnp.argmax(logits_BLV[..., :vocab_limit], axis=-1)
  hit_BL = (best_BL == labels_BL) | (weights_BL == 0)
  return jnp.sum(logp_BL * weights_BL, axis=1), jnp.all(hit_BL, axis=1)


def _arrays(rows, width, pad_id):
  """[B, W] tokens, segment ids, prefix mask and continuation weights of fitted rows."""
  tokens, segs = base.pad_rows([p + c for p, c, _ in rows], pad_id, width)
  prefix = np.zeros_like(tokens)
  weights = np.zeros(tokens.shape, np.float32)
  for r, (p, c, bidirectional) in enumerate(rows):
    prefix[r, :len(p)] = int(bidirectional)
    weights[r, len(p) - 1:len(p) + len(c) - 1] = 1.0   # positions predicting the continuation
  return tokens, segs, prefix, weights


def score(model, requests, *, pad_id=0, vocab_limit=None, batch_size=16):
  """One Scored per request, in order (see the module docstring)."""
  limit = position_limit(model)
  fitted = [fit(r, limit) for r in requests]
  rows = [(p, list(r.continuation), bool(r.bidirectional))
          for (p, _), r in zip(fitted, requests)]
  graphdef, state = nnx.split(model)
  vocab_limit = int(vocab_limit or model.hp.vocab_size)
  use_prefix = any(r[2] for r in rows)
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]) - len(rows[i][1]))
  out = [None] * len(rows)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    part = [rows[i] for i in chunk]
    filled = part + [part[0]] * (batch_size - len(part))
    width = _width(max(len(p) + len(c) for p, c, _ in part), limit)
    sums, greedy = jax.device_get(_forward(
        graphdef, state, *_arrays(filled, width, pad_id), vocab_limit=vocab_limit,
        use_prefix=use_prefix))
    for k, i in enumerate(chunk):
      out[i] = Scored(float(sums[k]), len(rows[i][1]), bool(greedy[k]), fitted[i][1])
  return out
