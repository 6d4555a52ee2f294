"""A comparison's pretraining corpus per scale (transformer/comparisons/plan.py, corpora.py,
data/prefix_pairs.py): tiny reads the embedded text, small and base C4 by its TFDS name (mocked
here with tfds.testing.mock_data: no network, no data), the prefix-LM cells of both families
read the same (prefix, continuation) cut of the same document, the overlap report says C4 was
not scanned, and without C4 on disk `--scale small` stops in one line, nothing written."""

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from transformer import compare
from transformer import data as data_lib
from transformer import objectives
from transformer.comparisons import budget as budget_lib
from transformer.comparisons import corpora, overlap
from transformer.comparisons import plan as plan_lib
from transformer.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T5_TABLE2 = os.path.join(REPO, 'experiments', 'compare_t5_table2.py')
LM_CELLS = {'encdec_lm', 'encdec_shared_lm', 'encdec_half_lm', 'prefix_lm'}
DOCS = [f'Document {i} says ' + ' '.join(f'w{(i * 7 + k) % 50}' for k in range(20 + 9 * i))
        for i in range(10)] + ['nospaceatall', 'two words']


def _c4(self, split, **kwargs):
  """mock_data's stand-in for C4's examples: DOCS as the 'text' field of every split."""
  del self, split, kwargs
  return tf.data.Dataset.from_tensor_slices({'text': DOCS, 'url': ['u'] * len(DOCS)})


@pytest.mark.parametrize('scale', ['small', 'base'])
def test_small_and_base_pretrain_every_cell_on_c4(tmp_path, scale):
  plan = plan_lib.load(T5_TABLE2, scale, 1, str(tmp_path))
  assert plan.corpus == 'c4/en'
  for cell, overrides in plan.cells.items():
    assert overrides['data.source'] == 'c4/en', cell
    assert overrides.get('data.prefix_pairs', False) == (cell in LM_CELLS), cell
  budget_lib.match_budget(plan)
  runs = plan_lib.pretrain_runs(plan, 'tokenizer.model')
  assert len(runs) == len(plan.cells) - len(plan.controls)
  assert {r['data.source'] for r in runs} == {'c4/en'}
  # the model vocabulary is the shared tokenizer's (issue 23 item 6), not T5's 32,128
  assert {o['model.vocab_size'] for o in plan.cells.values()} == {8192}


def test_tiny_and_corpus_embedded_read_the_embedded_split(tmp_path):
  pretrain = 'jsonl:' + corpora.pretrain_file(os.path.abspath(str(tmp_path / 'compare_t5_table2')))
  for plan in (plan_lib.load(T5_TABLE2, 'tiny', 1, str(tmp_path)),
               plan_lib.load(T5_TABLE2, 'small', 1, str(tmp_path), corpus='embedded')):
    assert plan.corpus == corpora.EMBEDDED
    for cell, overrides in plan.cells.items():
      assert overrides['data.source'] == pretrain and overrides['data.text_key'] == 'text', cell
      assert overrides.get('data.prefix_pairs', False) == (cell in LM_CELLS), cell


def _tokenizer(tmp_path):
  text = tmp_path / 'docs.txt'
  text.write_text('\n'.join(DOCS * 20) + '\n')
  c = common.base_config()
  c.data.update(source=f'text:{text}', data_dir=str(tmp_path / 'tok'), vocab_size=120)
  return data_lib.get_tokenizer(c)


def _examples(plan, cell, tokenizer, data_dir):
  """The first eval examples of a cell's pretraining pipeline on mocked C4: (raw, features)."""
  config = budget_lib.config_of(plan, {**plan.cells[cell], 'data.data_dir': data_dir})
  objective = objectives.get(config, tokenizer)
  pipeline = data_lib.Pipeline(config, objective, tokenizer, split='eval')
  raw = [r for _, r in itertools.islice(pipeline.raw_examples(), len(DOCS))]
  features = [f for _, f in itertools.islice(pipeline.examples(), len(DOCS))]
  return raw, features


def test_decoder_and_encoder_decoder_lm_cells_read_the_same_cut_of_each_document(tmp_path):
  from transformer.data import prefix_pairs  # pylint: disable=import-outside-toplevel  (new)
  plan = plan_lib.load(T5_TABLE2, 'small', 1, str(tmp_path / 'runs'))
  tokenizer = _tokenizer(tmp_path)
  with tfds.testing.mock_data(as_dataset_fn=_c4):
    enc_raw, enc = _examples(plan, 'encdec_lm', tokenizer, str(tmp_path / 'tfds'))
    dec_raw, dec = _examples(plan, 'prefix_lm', tokenizer, str(tmp_path / 'tfds'))
  assert enc_raw == dec_raw and len(enc_raw) == len(DOCS)   # one pair per document
  for doc, pair in zip(DOCS, enc_raw):
    assert (pair['inputs'], pair['targets']) == prefix_pairs.split(doc)
    assert doc.endswith(' '.join(filter(None, (pair['inputs'], pair['targets']))))
  assert enc_raw[-2] == {'inputs': '', 'targets': 'nospaceatall'}
  # the tokens: the encoder reads the prefix (+ eos), the decoder [bos] prefix [sep] reads it
  # bidirectionally; both score the same continuation (+ eos)
  for e, d in zip(enc, dec):
    n = len(e['inputs']) - 1
    np.testing.assert_array_equal(d['targets'][1:1 + n], e['inputs'][:-1])
    np.testing.assert_array_equal(d['targets'][2 + n:], e['targets'])
    assert d['targets_prefix'].sum() == n + 2
  # the same cut as the embedded corpus's pairs (one rule for jsonl files and TFDS)
  assert list(corpora.prefix_pairs(DOCS)) == enc_raw


def test_overlap_report_says_a_tfds_corpus_was_not_scanned():
  tests = {'docstring': [{'id': 'a', 'inputs': 'f(x)', 'targets': 'Return the value of x.'}]}
  report = overlap.overlap_report(tests, None, ['other text'], {'docstring': 0}, corpus='c4/en')
  row = report['docstring']
  assert row['pretrain_corpus'] == 'c4/en' and row['pretrain_scanned'] is False
  assert row['targets_ngram_pretrain'] is None and row['targets_substring_pretrain'] is None
  assert row['targets_ngram_tokenizer'] == 0.0
  text = overlap.report_markdown(report)
  assert 'c4/en, which was NOT scanned' in text


def test_list_works_offline_and_a_run_without_c4_on_disk_stops_in_one_line(
    tmp_path, capsys, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'no_tfds'))
  args = [T5_TABLE2, '--workdir', str(tmp_path / 'runs'), '--scale', 'small', '--seeds', '1']
  assert compare.main(args + ['--list']) == 0
  assert 'pretraining corpus c4/en' in capsys.readouterr().out
  assert compare.main(args) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and '`corpus=c4/en` (scale small)' in err, err
  assert str(tmp_path / 'no_tfds') in err and '--corpus embedded' in err, err
  assert not os.path.exists(tmp_path / 'runs') and not os.path.exists(tmp_path / 'no_tfds')


def test_a_jsonl_file_gives_the_same_pairs_and_other_roles_are_refused(tmp_path):
  """One code path: the embedded corpus's jsonl file is cut by the same source wrapper."""
  path = tmp_path / 'pretrain.jsonl'
  path.write_text(''.join(json.dumps({'id': str(i), 'text': t}) + '\n' for i, t in enumerate(DOCS)))
  c = common.base_config()
  c.data.update(source=f'jsonl:{path}', text_key='text', prefix_pairs=True)
  source = data_lib.get_source(c)
  read = [(r['inputs'].decode(), r['targets'].decode()) for split in ('train', 'validation')
          for r in source.dataset(split, ('inputs', 'targets')).as_numpy_iterator()]
  assert sorted(read) == sorted((p['inputs'], p['targets']) for p in corpora.prefix_pairs(DOCS))
  with pytest.raises(ConfigError, match=r"^`data.prefix_pairs=True`: the source gives only "
                     r"inputs and targets, not 'text'; use objective=seq2seq"):
    source.require(('text',))
