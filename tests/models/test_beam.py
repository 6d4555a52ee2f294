"""Beam search against brute force: every sequence of a 4-token vocabulary up to 3 new tokens.

A beam wide enough to hold every candidate is exact: its n best equal the n best sequences by
length-normalised log-probability, scored independently by running the model on each of them.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from transformer import models
from transformer.models import decoding
from transformer.models.decoding import Spec, beam

VOCAB, EOS, N = 4, 1, 3
PROMPT = np.array([[2, 3, 3, 2], [3, 0, 0, 0]], np.int32)   # right-padded: lengths 4 and 1
LENGTHS = (4, 1)


@pytest.fixture(scope='module')
def model():
  cfg = common.model_config(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, d_ff=64,
                            max_len=16, init_std=0.5)
  return models.build(cfg, rngs=nnx.Rngs(4))   # a seed where greedy misses the best


def _candidates():
  """Every output: new tokens ending at EOS, or N tokens without one."""
  out = []
  for length in range(1, N + 1):
    for seq in itertools.product(range(VOCAB), repeat=length):
      if EOS not in seq[:-1] and (seq[-1] == EOS or length == N):
        out.append(seq)
  return out


def _log_probs(model, prompt, seqs):
  """log P(seq | prompt) of each seq, from one forward pass of the model over prompt + seq."""
  rows = [list(prompt) + list(s) + [0] * (N - len(s)) for s in seqs]
  tokens = jnp.asarray(rows, jnp.int32)
  segs = jnp.asarray([[1] * (len(prompt) + len(s)) + [0] * (N - len(s)) for s in seqs])
  logp = jax.nn.log_softmax(jax.jit(lambda t, s: model(t, s))(tokens, segs))
  p = len(prompt)
  return np.array([sum(float(logp[i, p - 1 + t, tok]) for t, tok in enumerate(s))
                   for i, s in enumerate(seqs)])


def _brute_force(model, spec, row):
  seqs = _candidates()
  logp = _log_probs(model, PROMPT[row, :LENGTHS[row]], seqs)
  scores = logp / np.asarray(beam.penalty(np.array([len(s) for s in seqs]), spec))
  order = np.argsort(-scores)
  return [seqs[i] for i in order], scores[order], dict(zip(seqs, scores))


def _decode(model, spec):
  out = decoding.decode(model, PROMPT, segment_ids=(PROMPT > 0).astype(np.int32),
                        max_new_tokens=N, eos_id=EOS, spec=spec)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  return [[tuple(tokens[b, k, :lengths[b, k]]) for k in range(tokens.shape[1])]
          for b in range(tokens.shape[0])], np.asarray(out.scores)


@pytest.mark.parametrize('length_norm,alpha', [('gnmt', 0.6), ('length', 1.0)])
def test_a_beam_holding_every_candidate_finds_the_n_best(model, length_norm, alpha):
  spec = Spec('beam', beam_size=9 * VOCAB, alpha=alpha, length_norm=length_norm, num_return=5)
  found, scores = _decode(model, spec)
  for row in range(2):
    best, best_scores, _ = _brute_force(model, spec, row)
    assert found[row] == best[:5], (row, found[row], best[:5])
    np.testing.assert_allclose(scores[row], best_scores[:5], atol=1e-4)
  greedy, _ = _decode(model, Spec())
  assert any(greedy[row][0] != found[row][0] for row in range(2))   # not greedy in disguise


@pytest.mark.parametrize('early_stopping', ['never', 'false', 'true'])
def test_narrow_beams_score_what_they_return(model, early_stopping):
  spec = Spec('beam', beam_size=2, alpha=0.6, early_stopping=early_stopping, num_return=2)
  found, scores = _decode(model, spec)
  for row in range(2):
    best, best_scores, by_sequence = _brute_force(model, spec, row)
    assert scores[row, 0] >= scores[row, 1]
    for k in range(2):
      np.testing.assert_allclose(scores[row, k], by_sequence[found[row][k]], atol=1e-4)
    assert scores[row, 0] <= best_scores[0] + 1e-5
