"""Every objective trains a few steps on TFDS-shaped data (tfds.testing.mock_data, no network).

The data are TFDS's random stand-ins for lm1b, wmt14_translate/de-en and glue/sst2, read through
the real builders' features; a small SentencePiece model is trained on that random text (in a
temporary data_dir) exactly as it would be on the real corpus. Also: fine-tuning a classifier from
a pretrained BERT with `checkpoint.init_from` loads the encoder and starts a fresh head.
"""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from transformer.training import checkpoint
from transformer import config as config_lib
from transformer.monitoring.events import read_events
from transformer.training import loop, setup
from transformer.training import trainer as trainer_lib

# Tiny models and batches: these tests prove the plumbing, not learning (tests/e2e/test_train.py).
TINY = {
    'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64,
    'train.batch_size': 4, 'data.seq_len': 32, 'data.vocab_size': 200,
    'data.tokenizer_train_examples': 200, 'data.shuffle_buffer': 16,
    'train.log_every': 1, 'train.eval_steps': 1, 'opt.warmup_steps': 1,
    'checkpoint.async_save': False, 'log.samples': 0, 'log.attention_images': False,
}
STEPS = 3

# name -> (config, TFDS source, overrides). The default run trains one objective per source and
# family path; the rest are marked slow (mlm and encoder classification also run, by default, in
# the fine-tuning test below; tests/e2e/test_train.py trains every LM objective on the embedded corpus).
RUNS = {
    'causal_lm': ('configs/gpt2.py:tiny', 'lm1b', {}),
    'seq2seq': ('configs/transformer.py:tiny', 'wmt14_translate/de-en', {'data.targets_len': 16}),
    'classification_decoder': ('configs/gpt2.py:tiny', 'glue/sst2',
                               {'objective': 'classification'}),
}
SLOW_RUNS = {
    'prefix_lm': ('configs/gpt2.py:tiny', 'lm1b', {'objective': 'prefix_lm'}),
    'mlm': ('configs/bert.py:tiny', 'lm1b', {}),
    'span_corruption': ('configs/t5.py:tiny', 'lm1b', {'data.targets_len': 16}),
    'seq2seq_decoder': ('configs/gpt2.py:tiny', 'wmt14_translate/de-en', {'objective': 'seq2seq'}),
    'classification_encoder': ('configs/bert.py:tiny', 'glue/sst2',
                               {'objective': 'classification'}),
}
PARAMS = list(RUNS) + [pytest.param(name, marks=pytest.mark.slow) for name in SLOW_RUNS]


def load(spec, data_dir, **overrides):
  values = {**TINY, 'data.data_dir': str(data_dir), 'train.steps': STEPS,
            'train.eval_every': STEPS, 'checkpoint.every': 2, **overrides}
  return config_lib.load(spec, {k: str(v) for k, v in values.items()})


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """One TFDS data_dir per module: the tokenizers trained on mock text are cached there."""
  return tmp_path_factory.mktemp('tfds')


def _steps(run):
  return sorted(int(d) for d in os.listdir(os.path.join(run, 'checkpoints')) if d.isdigit())


@pytest.mark.parametrize('name', PARAMS)
def test_objective_trains_on_mock_tfds(name, data_dir, tmp_path):
  spec, source, overrides = {**RUNS, **SLOW_RUNS}[name]
  config = load(spec, data_dir, **{'data.source': source, **overrides})
  with tfds.testing.mock_data(num_examples=16):
    final = loop.train(config, str(tmp_path))
  run = setup.run_dir(config, str(tmp_path))
  events = read_events(run)
  losses = [v for _, v in events['scalars']['train/loss']]
  assert len(losses) == STEPS and np.isfinite(losses).all(), losses
  assert np.isfinite(final['eval/loss']) and 0.0 <= final['eval/accuracy'] <= 1.0
  assert _steps(run) == [2, STEPS]
  assert os.path.isfile(os.path.join(run, 'tokenizer.model'))
  assert os.path.isfile(os.path.join(run, 'config.json'))


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in kp): np.asarray(v)
          for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_classifier_fine_tunes_from_pretrained_bert(data_dir, tmp_path, monkeypatch):
  # Pretrain a tiny BERT with MLM on mock lm1b.
  pre = load('configs/bert.py:tiny', data_dir, **{'data.source': 'lm1b', 'run_name': 'pre'})
  with tfds.testing.mock_data(num_examples=16):
    loop.train(pre, str(tmp_path))
  pre_dir = setup.run_dir(pre, str(tmp_path))
  ckpt = checkpoint.Checkpointer(os.path.join(pre_dir, 'checkpoints'), every=1, keep=5)
  _, pre_state, _ = ckpt.restore(None)
  ckpt.close()
  pretrained = _flat(pre_state['params'])

  # Record the parameters the fine-tuning run starts from: a fresh init, then the loaded ones.
  starts = []
  original = trainer_lib.Trainer.state_from_params

  def recording(self, params):
    starts.append(_flat(jax.device_get(params)))
    return original(self, params)
  monkeypatch.setattr(trainer_lib.Trainer, 'state_from_params', recording)

  # init_from names the pretraining run; its architecture wins over the config's (d_ff here).
  fine = load('configs/bert.py:tiny', data_dir, **{
      'data.source': 'glue/sst2', 'objective': 'classification', 'run_name': 'fine',
      'data.tokenizer': os.path.join(pre_dir, 'tokenizer.model'), 'model.d_ff': 48,
      'checkpoint.init_from': pre_dir})
  with tfds.testing.mock_data(num_examples=16):
    final = loop.train(fine, str(tmp_path))
  assert np.isfinite(final['eval/loss'])
  with open(os.path.join(setup.run_dir(fine, str(tmp_path)), 'config.json')) as f:
    assert json.load(f)['model']['d_ff'] == TINY['model.d_ff']
  assert len(starts) == 2, 'expected a fresh init followed by the pretrained parameters'
  fresh, loaded = starts

  shared = [p for p in loaded if p in pretrained and pretrained[p].shape == loaded[p].shape]
  head = [p for p in loaded if p not in pretrained]
  assert any('layers' in p for p in shared) and any('embed' in p for p in shared), shared
  assert head, 'the classifier should have parameters the MLM model lacks'
  for p in shared:   # encoder weights: exactly the pretrained ones at step 0
    np.testing.assert_array_equal(loaded[p], pretrained[p], err_msg=p)
  assert any(not np.array_equal(fresh[p], pretrained[p]) for p in shared)
  for p in head:     # the head: the fresh initialisation, untouched by the checkpoint
    np.testing.assert_array_equal(loaded[p], fresh[p], err_msg=p)
  assert _steps(setup.run_dir(fine, str(tmp_path))) == [2, STEPS]


def test_init_from_accepts_a_run_or_its_checkpoints(tmp_path):
  run = tmp_path / 'run'
  (run / 'checkpoints' / '4').mkdir(parents=True)
  (run / 'config.json').write_text('{}')
  expected = (str(run / 'checkpoints'), str(run / 'config.json'))
  assert setup.pretrained_paths(str(run)) == expected
  assert setup.pretrained_paths(str(run / 'checkpoints')) == expected
  imported = tmp_path / 'imported'     # import-hf: step folders beside config.json
  (imported / '0').mkdir(parents=True)
  (imported / 'config.json').write_text('{}')
  assert setup.pretrained_paths(str(imported)) == (str(imported), str(imported / 'config.json'))
  assert setup.pretrained_paths(str(tmp_path / 'bare')) == (str(tmp_path / 'bare'), None)
