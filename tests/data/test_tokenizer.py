"""SentencePiece: contract ids, exact round trips, caching, determinism, explicit paths."""

import os
import re

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
  with pytest.raises(ConfigError, match='`data.tokenizer[=`]') as e:
    data_lib.get_tokenizer(c)
  assert '\n' not in str(e.value)


STRUCTURAL_TEXTS = ['<mask>', 'x = "<mask>"', '(?P<sep>[,;])', '<cls> a <sep> b',
                    '<extra_id_0>', 'y <extra_id_31> z', '<extra_id_0><extra_id_1>']


@pytest.mark.parametrize('text', STRUCTURAL_TEXTS)
def test_text_never_encodes_to_structural_symbols(stdlib_tokenizer, text):
  """<mask>, <sep>, <cls>, <extra_id_N> are control symbols: only code inserts them, by id."""
  tok = stdlib_tokenizer
  structural = {tok.mask_id, tok.sep_id, tok.cls_id, *tok.sentinel_ids}
  ids = tok.encode(text)
  assert not structural & set(ids), [tok.id_to_piece(i) for i in ids]
  assert not structural & {i for row in tok.encode_batch([text, text * 2]) for i in row}
  assert tok.decode(ids) == text                    # the literal text still round-trips


def test_structural_symbols_decode_by_name_inside_text(stdlib_tokenizer):
  """Samples of span corruption / MLM stay readable: control ids show as their names, and
  removing the names gives exactly the decoded text around them."""
  tok = stdlib_tokenizer
  ids = tok.encode('def area(r):\n    return 3.14 * r * r  # circle')
  for at in (0, 1, 3, len(ids) // 2, len(ids)):
    for symbol in (tok.mask_id, tok.sentinel_ids[0], tok.sep_id):
      name = tok.id_to_piece(symbol)
      shown = tok.decode(ids[:at] + [symbol] + ids[at:])
      assert shown.count(name) == 1 and shown.replace(name, '') == tok.decode(ids), (at, shown)
  spans = [tok.cls_id] + ids[:2] + [tok.sentinel_ids[0]] + ids[4:] + [tok.sep_id, tok.eos_id, 9]
  shown = tok.decode(spans)                        # stops at EOS
  assert shown.startswith(f'<cls>{tok.decode(ids[:2])}<extra_id_0>') and shown.endswith('circle<sep>')


def test_decode_skips_ids_past_the_vocabulary(stdlib_tokenizer):
  """A model may have more rows than the tokenizer has ids (a published vocabulary over a
  2,048-piece tokenizer): such an id decodes to nothing, as in transformers (it raised
  IndexError, which ended training at its first text samples)."""
  tok = stdlib_tokenizer
  ids = tok.encode('def area(r):\n    return 3.14 * r * r')
  n = tok.vocab_size
  past = [n + 5] + ids[:3] + [n, tok.sentinel_ids[0], n + 1000] + ids[3:] + [n]
  assert tok.decode(past) == tok.decode(ids[:3] + [tok.sentinel_ids[0]] + ids[3:])
  assert tok.decode([n, -1]) == ''


def test_too_small_vocab_size_names_the_key_and_the_smallest_size(english_file, tmp_path):
  """A vocabulary too small for the characters of the data: one line with a size that trains."""
  c = make_config(tmp_path, source=f'text:{english_file}', vocab_size=100,
                  tokenizer_train_examples=500)
  with pytest.raises(ConfigError) as e:
    data_lib.get_tokenizer(c)
  message = str(e.value)
  assert '\n' not in message and 'data.vocab_size=100' in message, message
  smallest = int(re.search(r'smallest that works is (\d+)', message).group(1))
  assert 100 < smallest < 512
  assert not os.path.exists(tokenizer_lib.cache_path(c))
  for size, works in ((smallest - 1, False), (smallest, True)):
    c.data.vocab_size = size
    if works:
      assert data_lib.get_tokenizer(c).vocab_size >= smallest - 8
    else:
      with pytest.raises(ConfigError, match=f'smallest that works is {smallest}'):
        data_lib.get_tokenizer(c)


@pytest.mark.parametrize('vocab_size', [1, 30])
def test_tiny_vocab_sizes_get_the_same_one_line_error(english_file, tmp_path, vocab_size):
  c = make_config(tmp_path, source=f'text:{english_file}', vocab_size=vocab_size,
                  tokenizer_train_examples=500)
  with pytest.raises(ConfigError, match=rf'`data.vocab_size={vocab_size}`.*smallest that works is '
                                        r'\d+') as e:
    data_lib.get_tokenizer(c)
  assert '\n' not in str(e.value)


def test_too_small_vocab_size_is_a_one_line_error_of_the_train_entry_point(english_file,
                                                                          tmp_path, capsys):
  from transformer import train  # pylint: disable=import-outside-toplevel
  code = train.main(['--config', 'configs/gpt2.py:tiny', '--workdir', str(tmp_path / 'runs'),
                     f'--config.data.source=text:{english_file}', '--config.data.vocab_size=100',
                     f'--config.data.data_dir={tmp_path / "data"}',
                     '--config.data.tokenizer_train_examples=500'])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith('error: `data.vocab_size=100`') and '\n' not in err, err
  assert 'smallest that works is' in err
  assert not os.path.exists(tmp_path / 'data' / 'tokenizers') or not [
      f for f in os.listdir(tmp_path / 'data' / 'tokenizers') if f.endswith('.model')]
