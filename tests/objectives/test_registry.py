"""objectives.get: every valid objective/family pair builds; mismatches fail in one line."""

import pytest

from transformer import objectives
from transformer.errors import ConfigError

from tests.objectives.test_ul2 import ModeTokenizer

VALID = [('mlm', 'encoder'), ('causal_lm', 'decoder'), ('prefix_lm', 'decoder'),
         ('span_corruption', 'encoder_decoder'), ('span_corruption', 'decoder'),
         ('seq2seq', 'encoder_decoder'),
         ('seq2seq', 'decoder'), ('classification', 'encoder'), ('classification', 'decoder'),
         ('ul2', 'encoder_decoder'), ('ul2', 'decoder'), ('distillation', 'encoder')]
FAMILIES = ('encoder', 'decoder', 'encoder_decoder')
IMAGES = [('image_classification', 'encoder')]   # an image model: tests/objectives/test_image_*


@pytest.mark.parametrize('objective,family', VALID)
def test_valid_pairs_build_with_consistent_attributes(objective, family, make_config, tokenizer):
  tokenizer = ModeTokenizer() if objective == 'ul2' else tokenizer   # UL2's mode tokens too
  obj = objectives.get(make_config(objective, family), tokenizer)
  assert obj.name == objective
  assert obj.head == ('classification' if objective == 'classification' else 'lm')
  assert obj.example_fields in (('text',), ('inputs', 'targets'), ('text', 'label'))
  expected_streams = {'inputs', 'targets'} if family == 'encoder_decoder' else (
      {'targets'} if family == 'decoder' and objective != 'classification' else {'inputs'})
  assert set(obj.stream_lengths) == expected_streams
  assert all(v > 0 for v in obj.stream_lengths.values())
  assert obj.packable == (objective != 'classification')


@pytest.mark.parametrize('objective,family', [(o, f) for o in objectives.REGISTRY
                                              for f in FAMILIES if (o, f) not in VALID + IMAGES])
def test_mismatch_is_one_line_naming_both_keys(objective, family, make_config, tokenizer):
  with pytest.raises(ConfigError) as info:
    objectives.get(make_config(objective, family), tokenizer)
  message = str(info.value)
  assert '\n' not in message
  assert '`objective=' in message and '`model.family=' in message
  for ok_family in objectives.REGISTRY[objective].families:
    assert ok_family in message
  for alternative in objectives.objectives_for(family):
    assert alternative in message


def test_unknown_objective_lists_the_choices(make_config, tokenizer):
  with pytest.raises(ConfigError, match=r'`objective=.*mlm.*classification'):
    objectives.get(make_config('denoise', 'encoder'), tokenizer)


@pytest.mark.parametrize('objective,family,key,value', [
    ('mlm', 'encoder', 'mlm_probability', 1.5),
    ('prefix_lm', 'decoder', 'prefix_fraction', 0.0),
    ('span_corruption', 'encoder_decoder', 'noise_density', -0.1),
    ('span_corruption', 'encoder_decoder', 'targets_len', 2),
])
def test_bad_data_values_name_the_key(objective, family, key, value, make_config, tokenizer):
  with pytest.raises(ConfigError, match=f'`data.{key}[=`]') as info:
    objectives.get(make_config(objective, family, **{key: value}), tokenizer)
  assert '\n' not in str(info.value)
