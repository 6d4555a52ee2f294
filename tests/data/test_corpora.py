"""The embedded TFDS builders: real text, sensible pairs, a stable ~5% validation split."""

import struct

import pytest
import tensorflow_datasets as tfds

import transformer.data as data_lib
from transformer.data import gettext_corpus
from transformer.data import stdlib_corpus
from transformer.errors import ConfigError

from tests.data.conftest import make_config


def _read(builder, split):
  return [{k: v.decode() for k, v in ex.items()}
          for ex in tfds.as_numpy(builder.as_dataset(split=split))]


def test_stdlib_text_is_real_prose_with_stable_split(stdlib_dir):
  builder = tfds.builder('python_stdlib/text', data_dir=str(stdlib_dir))
  train, valid = _read(builder, 'train'), _read(builder, 'validation')
  assert len(train) > 2000
  assert 0.02 < len(valid) / (len(train) + len(valid)) < 0.08
  ids = [ex['id'] for ex in train + valid]
  assert len(ids) == len(set(ids))
  assert all(not stdlib_corpus.is_validation(ex["id"]) for ex in train)
  assert all(stdlib_corpus.is_validation(ex['id']) for ex in valid)
  by_id = {ex['id']: ex['text'] for ex in train}
  # A docstring we know, and the language reference.
  dumps = [t for i, t in by_id.items() if ':json.dumps:' in i]
  assert dumps and dumps[0].startswith('json.dumps\n\nSerialize')
  assert any(i.startswith('topic:') for i in by_id)
  assert not any('/test/' in i or ':test.' in i for i in ids)
  total_chars = sum(len(t) for t in by_id.values())
  assert 500_000 < total_chars < 10_000_000


def test_split_hash_is_stable():
  assert stdlib_corpus.is_validation('x') == stdlib_corpus.is_validation('x')
  picks = [stdlib_corpus.is_validation(f'id{i}') for i in range(4000)]
  assert 0.03 < sum(picks) / len(picks) < 0.07


def test_stdlib_docstrings_pairs(tmp_path, small_stdlib):
  del small_stdlib
  builder = tfds.builder('python_stdlib/docstrings', data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  pairs = _read(builder, 'train') + _read(builder, 'validation')
  assert len(pairs) >= 5
  for ex in pairs:
    assert ex['inputs'].startswith(('def ', 'async def ')), ex['inputs'][:40]
    assert '"""' not in ex['inputs'].split('\n')[1]     # the docstring is gone
    assert ex['targets'] and '\n' not in ex['targets']
  by_name = {ex['id'].split('.')[-1]: ex for ex in pairs}   # ids end in the qualified name
  assert by_name['dumps']['targets'] == 'Serialize ``obj`` to a JSON formatted ``str``.'
  assert 'return cls(' in by_name['dumps']['inputs']


def _write_mo(path, messages):
  """A minimal GNU .mo catalog with `messages` {msgid: msgstr} (sorted, no hash table)."""
  keys = sorted(messages)
  ids = b''.join(k.encode() + b'\0' for k in keys)
  strs = b''.join(messages[k].encode() + b'\0' for k in keys)
  n = len(keys)
  key_start = 7 * 4 + 16 * n
  value_start = key_start + len(ids)
  koffsets, voffsets, ko, vo = [], [], 0, 0
  for k in keys:
    koffsets += [len(k.encode()), key_start + ko]
    ko += len(k.encode()) + 1
  for k in keys:
    voffsets += [len(messages[k].encode()), value_start + vo]
    vo += len(messages[k].encode()) + 1
  header = struct.pack('Iiiiiii', 0x950412de, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
  path.write_bytes(header + struct.pack(f'{2 * n}i', *koffsets) +
                   struct.pack(f'{2 * n}i', *voffsets) + ids + strs)


def test_gettext_catalog_cleaning(tmp_path, monkeypatch):
  folder = tmp_path / 'de' / 'LC_MESSAGES'
  folder.mkdir(parents=True)
  _write_mo(folder / 'demo.mo', {
      '': 'Content-Type: text/plain; charset=UTF-8\n',
      '_Open File': '_Datei öffnen',
      '&Save\n  all': '&Alle   speichern',
      'menu\x04Quit': 'Beenden',
      'OK': 'OK',                       # untranslated: skipped
      'snake_case name': 'snake_case Name',
      'Empty': '',                      # empty: skipped by gettext itself
  })
  monkeypatch.setattr(gettext_corpus, 'LOCALE_DIR', str(tmp_path / '{lang}' / 'LC_MESSAGES'))
  pairs = {en: de for _, en, de in gettext_corpus.catalog_pairs(str(folder / 'demo.mo'))}
  assert pairs == {'Open File': 'Datei öffnen', 'Save all': 'Alle speichern', 'Quit': 'Beenden',
                   'snake_case name': 'snake_case Name'}
  builder = tfds.builder('gettext_catalogs/en_de', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  rows = _read(builder, 'train') + _read(builder, 'validation')
  assert sorted((r['inputs'], r['targets']) for r in rows) == sorted(pairs.items())


def test_gettext_without_catalogs_names_the_fix(tmp_path, monkeypatch):
  monkeypatch.setattr(gettext_corpus, 'LOCALE_DIR', str(tmp_path / 'none' / '{lang}'))
  with pytest.raises(ConfigError) as e:
    data_lib.get_source(make_config(tmp_path, source='gettext_catalogs/en_de'))
  message = str(e.value)
  assert '\n' not in message
  assert '`data.source=' in message and 'python_stdlib/docstrings' in message


@pytest.mark.skipif(not gettext_corpus.catalog_paths(), reason='no German catalogs here')
def test_real_catalog_pairs_are_translations():
  pairs = [p for path in gettext_corpus.catalog_paths()[:5]
           for p in gettext_corpus.catalog_pairs(path)]
  assert len(pairs) > 50
  assert all(en != de and en and de and '\n' not in en for _, en, de in pairs)
