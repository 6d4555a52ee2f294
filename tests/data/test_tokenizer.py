"""SentencePiece: contract ids, exact round trips, caching, determinism, explicit paths."""

import os

import pytest

import transformer.data as data_lib
from transformer.data import tokenizer as tokenizer_lib
from transformer.errors import ConfigError

from tests.data.conftest import make_config

CODE = 'def f(x):\n    """Return x."""\n\treturn  x + 1  # ünïcode ✓\n'


@pytest.fixture(scope='module')
def stdlib_config(stdlib_dir):
  return make_config(stdlib_dir, source='python_stdlib/text', vocab_size=700,
                     tokenizer_train_examples=1000)


@pytest.fixture(scope='module')
def stdlib_tokenizer(stdlib_config):
  return data_lib.get_tokenizer(stdlib_config)


def test_special_ids(stdlib_tokenizer):
  tok = stdlib_tokenizer
  assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, 3)
  assert tok.id_to_piece(tok.mask_id) == '<mask>'
  assert tok.id_to_piece(tok.sep_id) == '<sep>' and tok.id_to_piece(tok.cls_id) == '<cls>'
  assert len(tok.sentinel_ids) == 32 and len(set(tok.sentinel_ids)) == 32
  assert [tok.id_to_piece(i) for i in tok.sentinel_ids[:2]] == ['<extra_id_0>', '<extra_id_1>']
  assert 600 <= tok.vocab_size <= 700
  assert tok.mask_id in tok.encode('a <mask> b')   # user-defined symbols are never split


def test_round_trip(stdlib_tokenizer):
  tok = stdlib_tokenizer
  text = 'Return the number of items in a container.\n\nSee also: len().'
  ids = tok.encode(text)
  assert tok.eos_id not in ids and tok.unk_id not in ids
  assert len(ids) < len(text) / 2          # learned pieces, not characters
  assert tok.decode(ids) == text
  assert tok.decode(tok.encode(CODE)) == CODE   # whitespace, tabs, newlines, unicode
  # decode stops at EOS and drops padding
  assert tok.decode([0] + ids + [tok.eos_id] + tok.encode(' junk') + [0]) == text


def test_cached_not_retrained(stdlib_config, stdlib_tokenizer, monkeypatch):
  path = tokenizer_lib.cache_path(stdlib_config)
  assert path == stdlib_tokenizer.model_path and os.path.isfile(path)
  assert os.path.dirname(path) == os.path.join(str(stdlib_config.data.data_dir), 'tokenizers')
  def fail(*args, **kwargs):
    raise AssertionError('retrained')
  monkeypatch.setattr(tokenizer_lib, 'train', fail)
  monkeypatch.setattr(tokenizer_lib, '_LOADED', {})
  again = data_lib.get_tokenizer(stdlib_config)
  assert again.encode(CODE) == stdlib_tokenizer.encode(CODE)
  # A different vocabulary size is a different cache entry.
  other = stdlib_config.copy_and_resolve_references()
  other.data.vocab_size = 800
  assert tokenizer_lib.cache_path(other) != path


def test_training_is_deterministic(english_file, tmp_path):
  paths = []
  for run in ('a', 'b'):
    c = make_config(tmp_path / run, source=f'text:{english_file}', vocab_size=300,
                    tokenizer_train_examples=500)
    paths.append(data_lib.get_tokenizer(c).model_path)
  assert os.path.basename(paths[0]) == os.path.basename(paths[1])
  with open(paths[0], 'rb') as a, open(paths[1], 'rb') as b:
    assert a.read() == b.read()


def test_explicit_path_and_save(stdlib_tokenizer, tmp_path):
  saved = stdlib_tokenizer.save(str(tmp_path / 'run' / 'tokenizer.model'))
  c = make_config(tmp_path, source='text:/nonexistent/*.txt', tokenizer=saved)
  loaded = data_lib.get_tokenizer(c)           # the source is not even opened
  assert loaded.encode(CODE) == stdlib_tokenizer.encode(CODE)
  c.data.tokenizer = str(tmp_path / 'missing.model')
  with pytest.raises(ConfigError, match='`data.tokenizer`') as e:
    data_lib.get_tokenizer(c)
  assert '\n' not in str(e.value)
