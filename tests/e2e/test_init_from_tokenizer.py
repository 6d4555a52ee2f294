"""`checkpoint.init_from` trains with the tokenizer recorded beside the checkpoint: one of our runs
(its tokenizer.model, found from the run or its checkpoints/) or an import-hf output (the
checkpoint's own tokenizer), never a freshly trained one whose ids mean something else; a
`data.tokenizer` of another vocabulary and a --weights_only import are refused in one line.
"""

import json
import os

import pytest
import tensorflow_datasets as tfds

from transformer import config as config_lib
from transformer import data
from transformer import objectives
from transformer import train
from transformer.training import loop, setup
from transformer.errors import ConfigError

TINY = {
    'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64,
    'train.batch_size': 4, 'data.seq_len': 32, 'data.tokenizer_train_examples': 200,
    'data.shuffle_buffer': 16, 'train.log_every': 1, 'train.eval_steps': 1,
    'opt.warmup_steps': 1, 'checkpoint.async_save': False, 'log.samples': 0,
    'log.attention_images': False, 'train.steps': 2, 'train.eval_every': 2, 'checkpoint.every': 2,
}
TEXT = 'the tokenizer of a checkpoint travels with it'


def _load(data_dir, **overrides):
  values = {**TINY, 'data.data_dir': str(data_dir), **overrides}
  return config_lib.load('configs/gpt2.py:tiny', {k: str(v) for k, v in values.items()})


def _bytes(path):
  with open(path, 'rb') as f:
    return f.read()


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A tiny GPT-2 run pretrained on mock lm1b with a 200-piece tokenizer: (workdir, run dir)."""
  workdir = tmp_path_factory.mktemp('runs')
  config = _load(workdir / 'tfds', **{'data.source': 'lm1b', 'data.vocab_size': 200,
                                      'run_name': 'pre'})
  with tfds.testing.mock_data(num_examples=16):
    loop.train(config, str(workdir))
  return workdir, setup.run_dir(config, str(workdir))


def test_init_from_one_of_our_runs_trains_with_its_tokenizer(pretrained, monkeypatch):
  workdir, pre_dir = pretrained
  pre_tokenizer = data.Tokenizer(os.path.join(pre_dir, 'tokenizer.model'))
  used = []
  original = objectives.get
  monkeypatch.setattr(objectives, 'get', lambda c, tok: used.append(tok) or original(c, tok))
  # Another source and vocabulary size: a freshly trained tokenizer would give other ids.
  fine = _load(workdir / 'tfds', **{'data.source': 'glue/sst2', 'objective': 'classification',
                                    'data.vocab_size': 300, 'run_name': 'fine',
                                    'checkpoint.init_from': os.path.join(pre_dir, 'checkpoints')})
  with tfds.testing.mock_data(num_examples=16):
    loop.train(fine, str(workdir))
  [tokenizer] = used
  assert tokenizer.encode(TEXT) == pre_tokenizer.encode(TEXT)
  assert tokenizer.vocab_size == pre_tokenizer.vocab_size
  fine_dir = setup.run_dir(fine, str(workdir))
  assert _bytes(os.path.join(fine_dir, 'tokenizer.model')) == _bytes(pre_tokenizer.model_path)


def test_init_from_refuses_a_different_data_tokenizer(pretrained, tmp_path):
  workdir, pre_dir = pretrained
  other = _load(workdir / 'tfds', **{'data.source': 'lm1b', 'data.vocab_size': 200,
                                     'data.tokenizer_model': 'bpe'})
  with tfds.testing.mock_data(num_examples=16):
    other_path = data.get_tokenizer(other).model_path
  assert _bytes(other_path) != _bytes(os.path.join(pre_dir, 'tokenizer.model'))
  config = _load(workdir / 'tfds', **{'checkpoint.init_from': pre_dir,
                                      'data.tokenizer': other_path})
  with pytest.raises(ConfigError) as e:
    data.get_tokenizer(config)
  message = str(e.value)
  assert '\n' not in message and f'`data.tokenizer={other_path}`' in message, message
  same = tmp_path / 'copy.model'   # the same model under another name is accepted
  same.write_bytes(_bytes(os.path.join(pre_dir, 'tokenizer.model')))
  config.data.tokenizer = str(same)
  assert data.get_tokenizer(config).encode(TEXT) == data.Tokenizer(same).encode(TEXT)


def test_init_from_without_a_recorded_tokenizer_needs_one(tmp_path):
  bare = tmp_path / 'bare'
  (bare / 'checkpoints' / '2').mkdir(parents=True)
  config = _load(tmp_path / 'tfds', **{'checkpoint.init_from': str(bare)})
  with pytest.raises(ConfigError, match='no tokenizer.model recorded.*data.tokenizer=PATH'):
    data.get_tokenizer(config)


def _hf_bert(path, vocab_size):
  """A tiny random BertForMaskedLM saved to `path` (no tokenizer files)."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)


def test_init_from_a_weights_only_import_is_refused_in_one_line(tmp_path, capsys):
  from transformer import import_hf  # pylint: disable=import-outside-toplevel
  _hf_bert(tmp_path / 'hf', 97)
  argv = ['--from', str(tmp_path / 'hf'), '--workdir', str(tmp_path / 'out')]
  capsys.readouterr()   # save_pretrained's progress bar
  assert import_hf.main(argv) == 2   # no tokenizer files: refused, nothing written
  err = capsys.readouterr().err.strip()
  assert 'no tokenizer files' in err and '--weights_only' in err and '\n' not in err, err
  assert not os.path.exists(tmp_path / 'out')
  assert import_hf.main(argv + ['--weights_only']) == 0
  assert 'without a tokenizer' in capsys.readouterr().out
  record = json.loads((tmp_path / 'out' / 'tokenizer_info.json').read_text())
  assert record['tokenizer'] is None and record['vocab_size'] == 97
  before = sorted(os.listdir(tmp_path / 'out'))
  argv = ['--config', 'configs/bert.py:tiny', '--workdir', str(tmp_path / 'runs'),
          f'--config.checkpoint.init_from={tmp_path / "out"}', '--config.train.steps=2',
          '--config.opt.warmup_steps=0',   # no warmup warning: the error is the only line
          f'--config.data.data_dir={tmp_path / "tfds"}', '--config.data.source=glue/sst2',
          '--config.objective=classification']
  with tfds.testing.mock_data(num_examples=16):
    assert train.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  assert 'checkpoint.init_from' in err and '--weights_only' in err and '97-row' in err, err
  assert sorted(os.listdir(tmp_path / 'out')) == before
  assert not os.path.exists(tmp_path / 'runs')


@pytest.fixture(scope='module')
def imported_bert(tmp_path_factory):
  """A tiny random BERT with its WordPiece tokenizer, imported: (import dir, HF dir)."""
  from transformer import import_hf  # pylint: disable=import-outside-toplevel
  from tests.hf import builders  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp('bert')
  _hf_bert(root / 'hf', 400)
  builders.bert_tokenizer(str(root / 'hf'))
  assert import_hf.main(['--from', str(root / 'hf'), '--workdir', str(root / 'out')]) == 0
  return root / 'out', root / 'hf'


def test_init_from_an_hf_import_trains_with_its_tokenizer(imported_bert, tmp_path, monkeypatch):
  out, hf_dir = imported_bert
  from transformer.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  used = []
  original = objectives.get
  monkeypatch.setattr(objectives, 'get', lambda c, tok: used.append(tok) or original(c, tok))
  config = config_lib.load('configs/bert.py:tiny', {k: str(v) for k, v in {
      **TINY, 'data.data_dir': str(tmp_path / 'tfds'), 'data.source': 'glue/sst2',
      'objective': 'classification', 'checkpoint.init_from': str(out)}.items()})
  with tfds.testing.mock_data(num_examples=16):
    loop.train(config, str(tmp_path / 'runs'))
  [tokenizer] = used
  reference = hf_tokenizer.HFTokenizer(hf_dir)
  assert tokenizer.kind == 'huggingface' and tokenizer.vocabulary() == reference.vocabulary()
  assert tokenizer.encode(TEXT) == reference.encode(TEXT)
  run_tokenizer = os.path.join(setup.run_dir(config, str(tmp_path / 'runs')), 'tokenizer')
  assert hf_tokenizer.HFTokenizer(run_tokenizer).vocabulary() == reference.vocabulary()


def test_init_from_an_hf_import_refuses_another_vocabulary(imported_bert, tmp_path):
  out, hf_dir = imported_bert
  from tests.hf import builders  # pylint: disable=import-outside-toplevel
  other = builders.bert_tokenizer(str(tmp_path / 'other'), vocab_size=300)
  config = _load(tmp_path / 'tfds', **{'checkpoint.init_from': str(out), 'data.tokenizer': other})
  with pytest.raises(ConfigError) as e:
    data.get_tokenizer(config)
  message = str(e.value)
  assert '\n' not in message and f'`data.tokenizer={other}`' in message, message
  assert 'vocabulary differs' in message
  config.data.tokenizer = str(hf_dir)   # the same vocabulary: accepted
  assert data.get_tokenizer(config).encode(TEXT) == data.get_tokenizer(
      _load(tmp_path / 'tfds', **{'checkpoint.init_from': str(out)})).encode(TEXT)
