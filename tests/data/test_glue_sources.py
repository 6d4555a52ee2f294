"""GLUE's sources: the nine tasks by their TFDS names (tfds.testing.mock_data) and jsonl pair files
through the real classification objective, T5's text-to-text view of both, and one-line
refusals of a pair task without its second field and of a regression label that is no number."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

import transformer.data as data_lib
from transformer import objectives
from transformer.data import glue
from transformer.errors import ConfigError
from transformer import train

from tests.data.conftest import make_config


def _classification(config, tokenizer, family='encoder', num_classes=2):
  config.objective, config.model.family = 'classification', family
  config.model.num_classes, config.model.type_vocab_size = num_classes, 2 * (family == 'encoder')
  config.data.seq_len = 24
  return objectives.get(config, tokenizer)


def test_every_glue_task_on_mock_data(tmp_path, small_tokenizer):
  sep = small_tokenizer.sep_id
  with tfds.testing.mock_data(num_examples=6):
    for task in glue.TASKS.values():
      c = make_config(tmp_path, source=task.tfds)
      obj = _classification(c, small_tokenizer, num_classes=task.num_classes)
      assert ('text_pair' in obj.fields) == bool(task.text_pair), task.name
      for split in task.eval_splits[1:] + ('validation',):   # mnli: mismatched, then matched
        c.data.eval_split = split
        batch = next(data_lib.Pipeline(c, obj, small_tokenizer, split='eval').iterator())
        seps = (batch['inputs'][0] == sep).sum()
        assert seps == (2 if task.text_pair else 1), (task.name, batch['inputs'][0])
        assert batch['label'].dtype == (np.float32 if task.regression else np.int32)
        types = batch['inputs_token_types'][0][batch['inputs_segment_ids'][0] > 0]
        assert types.max() == bool(task.text_pair) and types[0] == 0


def test_t5_text_to_text_of_mock_glue(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    for name in ('mnli', 'stsb', 'cola'):
      task = glue.TASKS[name]
      c = make_config(tmp_path, source=task.tfds)
      raw = next(iter(tfds.as_numpy(data_lib.get_source(c).dataset('train', tuple(task.fields)))))
      c.data.text_to_text = name
      t5 = next(iter(tfds.as_numpy(data_lib.get_source(c).dataset('train', ('inputs', 'targets')))))
      text = {k: raw[k].decode() for k in ('text', 'text_pair') if k in raw}
      assert t5['inputs'].decode() == glue.t5_inputs(task, text['text'], text.get('text_pair'))
      assert t5['targets'].decode() == glue.t5_target(task, raw['label'])
      assert t5['inputs'].decode().startswith({'mnli': 'mnli hypothesis: ', 'stsb':
                                               'stsb sentence1: ', 'cola': 'cola sentence: '}[name])


def test_t5_strings():
  assert glue.t5_inputs(glue.TASKS['mnli'], 'P.', 'H.') == 'mnli hypothesis: H. premise: P.'
  assert glue.t5_inputs(glue.TASKS['qnli'], 'Q?', 'S.') == 'qnli question: Q? sentence: S.'
  stsb = glue.TASKS['stsb']
  assert [glue.t5_target(stsb, v) for v in (3.14, 3.35, 0.0, 5.0, 2.5)] == [
      '3.2', '3.4', '0.0', '5.0', '2.4']   # 2.5 * 5 = 12.5 rounds half to even, as tf.round
  assert glue.class_of(stsb, '3.4') == 3.4 and glue.class_of(stsb, 'three') == -1.0
  assert glue.class_of(glue.TASKS['mnli'], 'neutral') == 1
  assert glue.class_of(glue.TASKS['mnli'], 'maybe') == -1


def _write(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


def test_jsonl_pair_files_classify_and_regress(tmp_path, small_tokenizer):
  rows = [{'text': f'the first text {i}', 'text_pair': f'the second {i}', 'label': i % 3}
          for i in range(40)]
  c = make_config(tmp_path, source=f'jsonl:{_write(tmp_path / "nli.jsonl", rows)}',
                  text_pair_key='text_pair')
  obj = _classification(c, small_tokenizer, family='decoder', num_classes=3)
  batch = next(data_lib.Pipeline(c, obj, small_tokenizer).iterator())
  assert (batch['inputs'] == small_tokenizer.sep_id).sum(axis=1).tolist() == [1] * 4
  rows = [{'text': f'a {i}', 'text_pair': f'b {i}', 'label': i / 8} for i in range(40)]
  path = _write(tmp_path / 'sts.jsonl', rows)
  c = make_config(tmp_path, source=f'jsonl:{path}', text_pair_key='text_pair')
  obj = _classification(c, small_tokenizer, num_classes=1)
  batch = next(data_lib.Pipeline(c, obj, small_tokenizer).iterator())
  assert batch['label'].dtype == np.float32 and set(batch['label'] * 8) <= set(range(40))
  c.data.text_to_text = 'stsb'
  t5 = list(tfds.as_numpy(data_lib.get_source(c).dataset('train', ('inputs', 'targets'))))
  assert t5[0]['inputs'].decode().startswith('stsb sentence1: a ')
  assert {x['targets'].decode() for x in t5} <= {f'{v / 5:.1f}' for v in range(26)}


@pytest.mark.parametrize('rows,key,names', [
    ([{'text': 'a', 'label': 1}], 'text_pair', ['`data.text_pair_key=text_pair`', ':1', "'text_pair'"]),
    ([{'text': 'a', 'text_pair': 'b', 'label': 0.5}, {'text': 'a', 'text_pair': 'b',
                                                     'label': 'high'}],
     'label', ['`data.label_key=label`', ':2', '"high"', 'not a number']),
])
def test_bad_glue_jsonl_is_one_line_and_writes_nothing(tmp_path, capsys, rows, key, names):
  path = _write(tmp_path / 'bad.jsonl', rows)
  workdir, data_dir = tmp_path / 'work', tmp_path / 'data'
  regression = key == 'label'
  argv = ['--config', 'configs/bert.py:tiny', f'--workdir={workdir}',
          '--config.objective=classification', f'--config.data.source=jsonl:{path}',
          f'--config.data.data_dir={data_dir}', '--config.data.text_pair_key=text_pair',
          f'--config.model.num_classes={1 if regression else 2}', '--config.train.steps=2']
  capsys.readouterr()
  code = train.main(argv)
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
  assert code == 2 and len(err) == 1, err
  for name in names + [str(path)]:
    assert name in err[0], (name, err[0])
  assert not workdir.exists() and not (data_dir / 'tokenizers').exists()


def test_unknown_text_to_text_task_is_refused(tmp_path):
  with pytest.raises(ConfigError, match='`data.text_to_text=glue`: not a GLUE task'):
    data_lib.get_source(make_config(tmp_path, source='glue/sst2', text_to_text='glue'))
