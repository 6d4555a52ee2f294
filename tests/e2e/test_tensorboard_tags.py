"""The TensorBoard contract, read back with TensorBoard's own reader: every family's run writes every
tag of `transformer.logging.TAGS`, text samples, attention pictures and diagnostics of every layer
and kind, and its hparams.
"""

import math

import pytest

from transformer import config as config_lib
from transformer.monitoring import writer as tb
from transformer.monitoring.events import read_events
from transformer.training import loop, setup

STEPS = 2
TINY = {'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64,
        'data.seq_len': 32, 'data.vocab_size': 1024, 'train.batch_size': 4,
        'train.steps': STEPS, 'train.log_every': 1, 'train.eval_every': STEPS,
        'train.eval_steps': 1, 'checkpoint.every': STEPS, 'checkpoint.async_save': False,
        'log.samples': 1, 'log.sample_length': 4, 'log.attention_images': True}

FAMILIES = {
    'encoder': ('configs/bert.py:tiny', {}),
    'decoder': ('configs/gpt2.py:tiny', {}),
    'encoder_decoder': ('configs/t5.py:tiny', {'data.targets_len': 16}),
}


# the encoder's tags are a subset of the others' but for MLM: slow run (default run < 15 min)
@pytest.mark.parametrize('family', [pytest.param(f, marks=pytest.mark.slow) if f == 'encoder'
                                    else f for f in FAMILIES])
def test_every_contract_tag_is_written(family, tmp_path):
  spec, overrides = FAMILIES[family]
  config = config_lib.load(spec, {k: str(v) for k, v in {**TINY, **overrides}.items()})
  assert config.model.family == family
  loop.train(config, str(tmp_path))
  events = read_events(setup.run_dir(config, str(tmp_path)))

  scalars = events['scalars']
  missing = [tag for tag in tb.TAGS if tag not in scalars]
  assert not missing, f'{family}: tags not written: {missing}'
  assert [s for s, _ in scalars['train/loss']] == list(range(1, STEPS + 1))
  assert [s for s, _ in scalars['eval/loss']] == [STEPS]
  for tag in tb.TAGS:
    assert all(math.isfinite(v) for _, v in scalars[tag]), (tag, scalars[tag])
  assert scalars['params/total'][0][1] > scalars['params/non_embedding'][0][1] > 0
  assert scalars['train/tokens_seen'][-1][1] > 0

  (step, text), = events['text']['samples']
  assert step == STEPS
  for field in ('input:', 'prediction:', 'reference:'):
    assert field in text, text
  names = (['encoder/layer0', 'decoder/layer0', 'cross/layer0']
           if family == 'encoder_decoder' else ['layer0'])
  assert sorted(events['images']) == sorted(f'attention_maps/{n}/head{h}'
                                            for n in names for h in range(2))
  for tag, pictures in events['images'].items():   # one per head, at least 256 px a side
    (step, height, width), = pictures
    assert step == STEPS and min(height, width) >= 256, (tag, pictures)
  for name in names:   # attention diagnostics of every layer and kind
    for key in ('entropy', 'distance'):
      assert [s for s, _ in scalars[f'attention/{key}/{name}']] == [STEPS]
      assert {f'attention_heads/{key}/{name}/head{h}' for h in range(2)} <= set(scalars)
  assert 0 <= scalars['attention/uniform_heads'][0][1] <= 1
  assert 0 <= scalars['attention/one_hot_heads'][0][1] <= 1

  hparams = events['hparams']
  assert hparams['model.family'] == family
  assert hparams['model.d_model'] == 32 and hparams['train.steps'] == STEPS
  assert hparams['objective'] == config.objective
  assert {'eval/loss', 'eval/accuracy'} <= set(events['hparam_metrics'])
