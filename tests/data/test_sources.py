"""Sources: TFDS (mock_data) for lm1b, wmt14 and glue/sst2, text:/jsonl: files, one-line errors."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

import transformer.data as data_lib
from transformer.errors import ConfigError

from tests.data.conftest import ClassifyObjective, LMObjective, Seq2SeqObjective, make_config


def _one_line_error(config, *, match):
  with pytest.raises(ConfigError) as e:
    data_lib.Pipeline(config, LMObjective(), None)
  message = str(e.value)
  assert '\n' not in message and match in message, message
  return message


@pytest.mark.parametrize('source,objective,streams', [
    ('lm1b', LMObjective(16), ('targets',)),
    ('wmt14_translate/de-en', Seq2SeqObjective(), ('inputs', 'targets')),
    ('glue/sst2', ClassifyObjective(), ('inputs',)),
])
def test_mock_tfds_sources(tmp_path, small_tokenizer, source, objective, streams):
  c = make_config(tmp_path, source=source)
  with tfds.testing.mock_data(num_examples=12):
    for split in ('train', 'eval'):
      it = data_lib.Pipeline(c, objective, small_tokenizer, split=split).iterator()
      batch = next(it)
      for s in streams:
        assert batch[s].shape == (4, objective.stream_lengths[s])
        assert batch[s].dtype == np.int32
        assert (batch[f'{s}_segment_ids'][:, 0] > 0).all()
      if source == 'glue/sst2':
        assert batch['label'].shape == (4,) and set(batch['label']) <= {0, 1}


def test_text_source(tmp_path, english_file, small_tokenizer):
  c = make_config(tmp_path, source=f'text:{english_file.parent}/*.txt')
  source = data_lib.get_source(c)
  lines = english_file.read_text().splitlines()
  train, valid = source.records['train'], source.records['validation']
  assert len(train) + len(valid) == len(lines)
  assert 0.02 < len(valid) / len(lines) < 0.09
  assert data_lib.get_source(c).records == source.records         # same split every time
  batch = next(data_lib.Pipeline(c, LMObjective(), small_tokenizer).iterator())
  first = batch['targets'][0][batch['targets_segment_ids'][0] == 1]
  assert small_tokenizer.decode(first) in lines


def test_jsonl_source_and_missing_field(tmp_path, small_tokenizer):
  path = tmp_path / 'pairs.jsonl'
  rows = [{'en': f'hello number {i}', 'de': f'hallo nummer {i}', 'y': i % 2} for i in range(60)]
  path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
  c = make_config(tmp_path, source=f'jsonl:{path}', inputs_key='en', targets_key='de')
  batch = next(data_lib.Pipeline(c, Seq2SeqObjective(), small_tokenizer).iterator())
  got = small_tokenizer.decode(batch['inputs'][0][batch['inputs_segment_ids'][0] == 1])
  assert got.startswith('hello number')
  c.data.targets_key = 'fr'
  with pytest.raises(ConfigError, match='`data.targets_key[=`]') as e:
    next(data_lib.Pipeline(c, Seq2SeqObjective(), small_tokenizer).iterator())
  assert '\n' not in str(e.value) and 'de' in str(e.value)


def test_local_validation_split_is_never_empty(tmp_path):
  """A small file whose lines all hash to train still gives validation a line (its lowest-hash
  one, as stdlib_corpus.validation_ids does for TFDS), so evaluation has examples; bigger files
  keep the plain ~5% hash split."""
  from transformer.data import stdlib_corpus  # pylint: disable=import-outside-toplevel
  lines = [json.dumps({'text': f'line {i}\nsecond line', 'label': 0}) for i in range(200)]
  lines = [line for line in lines if not stdlib_corpus.is_validation(line)][:30]
  path = tmp_path / 'small.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  config = make_config(tmp_path, source=f'jsonl:{path}')
  source = data_lib.get_source(config)
  assert len(source.records['validation']) == 1 and len(source.records['train']) == 29
  assert data_lib.get_source(config).records == source.records      # the same line every time
  assert all(r['text'].endswith('\nsecond line') for r in source.records['train'])


def test_errors_are_one_line(tmp_path):
  _one_line_error(make_config(tmp_path, source=f'text:{tmp_path}/none/*.txt'),
                  match='`data.source')
  msg = _one_line_error(make_config(tmp_path, source='no_such_dataset_xyz'),
                        match='`data.source')
  assert 'not a TFDS dataset' in msg
  with tfds.testing.mock_data(num_examples=4):
    _one_line_error(make_config(tmp_path, source='wmt14_translate/de-en'),
                    match='`data.text_key')
    _one_line_error(make_config(tmp_path, source='lm1b', text_key='body'),
                    match='`data.text_key')


def _labelled(tmp_path, labels):
  path = tmp_path / 'labelled.jsonl'
  path.write_text(''.join(json.dumps({'text': f'some words number {i}', 'stars': label}) + '\n'
                          for i, label in enumerate(labels)))
  return path, make_config(tmp_path, source=f'jsonl:{path}', label_key='stars')


def test_jsonl_integral_float_labels_are_ids(tmp_path, small_tokenizer):
  path, c = _labelled(tmp_path, [float(i % 2) for i in range(40)])   # pandas writes 1.0
  batch = next(data_lib.Pipeline(c, ClassifyObjective(), small_tokenizer).iterator())
  assert batch['label'].dtype.kind == 'i' and set(batch['label']) <= {0, 1}


@pytest.mark.parametrize('bad', ['positive', 0.5, True, None, [1], '1'])
def test_jsonl_bad_label_is_one_line_naming_file_line_key_value(tmp_path, bad):
  path, c = _labelled(tmp_path, [0, 1, 1, bad, 0] * 8)
  with pytest.raises(ConfigError) as e:
    data_lib.Pipeline(c, ClassifyObjective(), None)   # before any tokenizer or batch
  message = str(e.value)
  assert '\n' not in message and '`data.label_key=stars`' in message, message
  assert f'{path}:4' in message and json.dumps(bad) in message, message


def test_jsonl_bad_labels_do_not_concern_other_objectives(tmp_path, small_tokenizer):
  path, c = _labelled(tmp_path, ['positive', 'negative'] * 20)
  batch = next(data_lib.Pipeline(c, LMObjective(), small_tokenizer).iterator())
  assert batch['targets'].shape == (4, 32)
