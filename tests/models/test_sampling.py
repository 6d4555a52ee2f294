"""Sampling draws from the distribution it claims: many seeded draws from one fixed distribution.

Tokens cut by top-k / top-p never appear; inside, the frequencies match the renormalised (and
temperature-scaled) probabilities by a chi-square test at a fixed seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from transformer.errors import ConfigError
from transformer.models.decoding import Spec, sampling

DRAWS = 20000
# Probabilities 0.3, 0.25, 0.15, 0.1, 0.08, 0.06, 0.04, 0.02 in a shuffled order.
PROBS = np.array([0.1, 0.02, 0.3, 0.06, 0.25, 0.04, 0.15, 0.08])
LOGITS = np.log(PROBS).astype(np.float32)


_choose = jax.jit(sampling.choose, static_argnums=2)


def _counts(spec, seed=0):
  logits_RV = jnp.broadcast_to(jnp.asarray(LOGITS), (DRAWS, len(LOGITS)))
  tokens = _choose(logits_RV, jax.random.key(seed), spec)
  return np.bincount(np.asarray(tokens), minlength=len(LOGITS))


def _chi_square_p(counts, kept, expected_probs):
  expected = expected_probs[kept] / expected_probs[kept].sum() * counts.sum()
  return stats.chisquare(counts[kept], expected).pvalue


@pytest.mark.parametrize('top_p,nucleus', [(0.7, (2, 4, 6)),     # 0.3 + 0.25 < 0.7 <= + 0.15
                                           (0.55, (2, 4)),       # 0.3 < 0.55 <= 0.3 + 0.25
                                           (0.05, (2,))])        # the top token alone
def test_top_p_draws_only_the_nucleus_in_proportion(top_p, nucleus):
  counts = _counts(Spec('sample', top_p=top_p))
  kept = np.zeros(len(PROBS), bool)
  kept[list(nucleus)] = True
  assert counts[~kept].sum() == 0, counts
  if kept.sum() > 1:
    assert _chi_square_p(counts, kept, PROBS) > 1e-3, counts


def test_top_k_and_temperature():
  counts = _counts(Spec('sample', top_k=3, temperature=0.5))
  kept = np.argsort(-PROBS)[:3]
  mask = np.zeros(len(PROBS), bool)
  mask[kept] = True
  assert counts[~mask].sum() == 0
  sharpened = PROBS ** 2   # softmax(log p / 0.5) is p^2 renormalised
  assert _chi_square_p(counts, mask, sharpened) > 1e-3, counts
  # The test has power: the untempered proportions are far from what was drawn.
  assert _chi_square_p(counts, mask, PROBS) < 1e-6


def test_full_distribution_and_seeds():
  counts = _counts(Spec('sample'))
  assert _chi_square_p(counts, np.ones(len(PROBS), bool), PROBS) > 1e-3
  np.testing.assert_array_equal(_counts(Spec('sample', top_p=0.9)),
                                _counts(Spec('sample', top_p=0.9)))   # same seed, same draws
  assert (_counts(Spec('sample'), seed=1) != counts).any()


def test_warp_keeps_ties_at_the_cut_and_greedy_is_argmax():
  logits = jnp.asarray([[1.0, 3.0, 3.0, 0.0]])
  warped = np.asarray(sampling.warp(logits, top_k=1))
  assert np.isfinite(warped[0, [1, 2]]).all() and np.isinf(warped[0, [0, 3]]).all()
  assert int(sampling.choose(logits, jax.random.key(0), Spec())[0]) == 1


@pytest.mark.parametrize('field,value,fragment', [
    ('top_p', 1.5, 'top_p=1.5'), ('temperature', 0.0, 'temperature=0.0'),
    ('strategy', 'nucleus', 'greedy, sample, beam'), ('top_k', -1, 'top_k=-1'),
    ('num_return', 5, 'beam_size=4'), ('early_stopping', 'maybe', 'never, false, true')])
def test_bad_specs_are_one_line_errors(field, value, fragment):
  strategy = {'num_return': 'beam'}.get(field, 'sample')
  spec = Spec(**{'strategy': strategy, field: value})
  with pytest.raises(ConfigError) as e:
    spec.validate('log.decode.')
  assert fragment in str(e.value) and f'log.decode.{field}' in str(e.value)
  assert '\n' not in str(e.value)
