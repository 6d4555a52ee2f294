"""training/fewshot.py on a random tiny decoder: a request's log-likelihood is the plain
forward pass's sum (alone or in any batch, causal or with a bidirectional prompt), `greedy` is
exactly greedy decoding, and a row past the position table loses prompt tokens from its left."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.e2e.sharding_helper import TINY
from transformer import config as config_lib
from transformer import models
from transformer.errors import ConfigError
from transformer.models import decoding
from transformer.training import fewshot


@pytest.fixture(scope='module')
def model():
  config = config_lib.load('configs/gpt2.py:tiny', {**TINY, 'model.num_layers': '2',
                                                    'model.max_len': '24', 'data.seq_len': '24',
                                                    'model.init_std': '0.3'})
  return models.build(config.model, rngs=nnx.Rngs(0))


@nnx.jit
def _forward(model, ids, prefix):
  return jax.nn.log_softmax(model(ids, prefix=prefix).astype(jnp.float32))


def _by_hand(model, request, width=24):
  """Sum of log P(continuation token | everything before it) from one forward of the row
  followed by arbitrary tokens (a causal model's earlier outputs never see them; one width
  compiles once)."""
  row = list(request.prompt) + list(request.continuation)
  ids = jnp.asarray([row + [1] * (width - len(row))])
  prefix = (jnp.arange(width) < len(request.prompt))[None] & request.bidirectional
  logp = np.asarray(_forward(model, ids, prefix.astype(jnp.int32)))[0]
  n = len(request.prompt)
  return sum(logp[n - 1 + t, c] for t, c in enumerate(request.continuation))


def _requests(bidirectional=False):
  rng = np.random.default_rng(0)
  return [fewshot.Request(rng.integers(4, 100, p).tolist(), rng.integers(4, 100, c).tolist(),
                          bidirectional)
          for p, c in [(3, 1), (7, 4), (1, 2), (12, 3), (5, 5)]]


@pytest.mark.parametrize('bidirectional', [False, True], ids=['causal', 'prefix'])
def test_loglikelihood_is_the_forward_pass_sum_in_any_batch(model, bidirectional):
  requests = _requests(bidirectional)
  want = [_by_hand(model, r) for r in requests]
  for batch_size in (2, 8):
    got = fewshot.score(model, requests, batch_size=batch_size)
    np.testing.assert_allclose([g.loglikelihood for g in got], want, atol=1e-5, rtol=1e-5)
    assert [g.tokens for g in got] == [len(r.continuation) for r in requests]
    assert not any(g.truncated for g in got)
  if bidirectional:   # the prompt did read itself both ways
    causal = fewshot.score(model, _requests(False))
    assert not np.allclose([g.loglikelihood for g in causal], want)


def test_greedy_is_greedy_decoding(model):
  prompt = [5, 17, 42, 9]
  new = np.asarray(decoding.generate(model, jnp.asarray([prompt]), max_new_tokens=4,
                                     eos_id=-1))[0].tolist()
  wrong = new[:-1] + [(new[-1] + 1) % 100]
  got = fewshot.score(model, [fewshot.Request(prompt, new, False),
                              fewshot.Request(prompt, wrong, False),
                              fewshot.Request(prompt, new[:2], False)])
  assert [g.greedy for g in got] == [True, False, True]


def test_a_row_past_the_table_loses_prompt_tokens_from_the_left(model):
  prompt, continuation = list(range(4, 34)), [7, 8, 9]        # 33 tokens, table of 24
  (got,) = fewshot.score(model, [fewshot.Request(prompt, continuation, False)])
  kept = fewshot.Request(prompt[:1] + prompt[-20:], continuation, False)   # 21 + 3 = 24
  assert got.truncated
  assert got.loglikelihood == pytest.approx(_by_hand(model, kept), abs=1e-5)
  with pytest.raises(ConfigError, match='model.max_len=24'):
    fewshot.score(model, [fewshot.Request([4], list(range(4, 30)), False)])
