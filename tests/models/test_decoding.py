"""Generation never reads past a learned position table: `decoding.generate` refuses a prompt +
max_new_tokens longer than model.max_len, and the trainer's text samples stay inside it."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.e2e.sharding_helper import TINY, FakeTokenizer
from transformer import config as config_lib
from transformer import models, objectives
from transformer.models import decoding
from transformer.errors import ConfigError


def _config(spec, **overrides):
  return config_lib.load(spec, {**TINY, 'model.max_len': '12', 'data.seq_len': '12',
                                'model.init_std': '0.5', **overrides})


def _model(config):
  return models.build(config.model, rngs=nnx.Rngs(0))


def _prompt(length, rows=2):
  return jnp.asarray(np.random.default_rng(0).integers(39, 128, (rows, length)), jnp.int32)


def test_generate_past_learned_positions_is_refused_up_front():
  model = _model(_config('configs/gpt2.py:tiny'))
  with pytest.raises(ConfigError) as e:   # the case: 8 + 8 > 12 gave 3 silent pads
    decoding.generate(model, _prompt(8), max_new_tokens=8, eos_id=-1)
  message = str(e.value)
  assert 'model.max_len=12' in message and 'max_new_tokens=8' in message and '4' in message
  assert '\n' not in message


def test_generate_up_to_the_end_of_the_table_is_fine():
  model = _model(_config('configs/gpt2.py:tiny'))
  tokens, logits = decoding.generate(model, _prompt(8), max_new_tokens=4, eos_id=-1,
                                     return_logits=True)
  assert tokens.shape == (2, 4) and np.isfinite(np.asarray(logits)).all()


def test_positions_without_a_table_have_no_limit():
  model = _model(_config('configs/gpt2.py:tiny', **{'model.positions': 'rotary'}))
  _, logits = decoding.generate(model, _prompt(8), max_new_tokens=8, eos_id=-1,
                                return_logits=True)
  assert np.isfinite(np.asarray(logits)).all()


class CountingTokenizer(FakeTokenizer):
  eos_id = -1   # never stop early: every requested token is generated

  def decode(self, ids):
    return len(ids)


def _rows(tokens_BL):
  tokens_BL = np.asarray(tokens_BL, np.int32)
  return tokens_BL, np.ones_like(tokens_BL)


def test_lm_samples_stay_inside_the_position_table():
  config = _config('configs/gpt2.py:tiny')
  objective = objectives.get(config, CountingTokenizer())
  tokens, segs = _rows(_prompt(12))   # prompt: the first 6 tokens; room for 6 more
  samples = objective.predict(_model(config), {'targets': tokens, 'targets_segment_ids': segs},
                              max_new_tokens=32)
  assert [s['prediction'] for s in samples] == [6, 6]


def test_seq2seq_samples_stay_inside_the_position_table():
  config = _config('configs/bart.py:tiny', **{'objective': 'seq2seq', 'data.targets_len': '12'})
  objective = objectives.get(config, CountingTokenizer())
  inputs, segs = _rows(_prompt(12))
  batch = {'inputs': inputs, 'inputs_segment_ids': segs, 'targets': inputs,
           'targets_segment_ids': segs}
  samples = objective.predict(_model(config), batch, max_new_tokens=32)
  assert [s['prediction'] for s in samples] == [12, 12]
