"""The GLUE suite (`./launch.sh glue`): the runs of the recipe, the table from the runs' events
(fast), and end to end on TFDS's mock GLUE data written as the suite's jsonl files (slow: a
tiny BERT pretrained for 2 steps, then two tasks fine-tuned as subprocesses)."""

import csv
import json
import os

import pytest
import tensorflow_datasets as tfds

from transformer import glue as glue_main
from transformer import train
from transformer.comparisons import glue, glue_table
from transformer.data import glue as glue_tasks
from transformer.data import sources
from transformer.monitoring import writer as tb
from transformer.monitoring.events import read_events

from configs import common


def _mock_jsonl(directory, tasks, n=60):
  """DIR/<task>.jsonl from tfds.testing.mock_data's examples of each GLUE task."""
  os.makedirs(directory, exist_ok=True)
  config = common.base_config()
  config.data.data_dir = os.path.join(directory, 'tfds')
  with tfds.testing.mock_data(num_examples=n):
    for name in tasks:
      task = glue_tasks.TASKS[name]
      config.data.source = task.tfds
      ds = sources.get_source(config).dataset('train', task.kinds)
      with open(os.path.join(directory, f'{name}.jsonl'), 'w') as f:
        for ex in tfds.as_numpy(ds):
          row = {k: v.decode() if isinstance(v, bytes) else v.item() for k, v in ex.items()}
          f.write(json.dumps(row) + '\n')
  return directory


def _pretrained(directory, **model):
  """A directory that passes for an import: config.json with a tiny BERT's model keys."""
  os.makedirs(directory, exist_ok=True)
  config = common.base_config()
  config.model.update(dict(family='encoder', positions='learned', max_len=64,
                           type_vocab_size=2, **model))
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    f.write(config.to_json())
  return directory


@pytest.fixture(scope='module')
def mock_dir(tmp_path_factory):
  return _mock_jsonl(str(tmp_path_factory.mktemp('glue_data')), ('cola', 'stsb'))


def test_runs_follow_the_recipe(tmp_path, mock_dir):
  plan = glue.load(_pretrained(str(tmp_path / 'bert')), str(tmp_path / 'runs'),
                   tasks=('cola', 'stsb'), source_dir=mock_dir)
  runs = {r['run_name']: r for r in glue.finetune_runs(plan)}
  assert sorted(runs) == ['cola_lr=2e-5', 'cola_lr=3e-5', 'cola_lr=5e-5', 'stsb_lr=2e-5',
                          'stsb_lr=3e-5', 'stsb_lr=5e-5']
  train_n = plan.sizes['stsb'][0]
  stsb = runs['stsb_lr=3e-5']
  assert stsb['model.num_classes'] == 1 and stsb['data.text_pair_key'] == 'text_pair'
  assert stsb['train.steps'] == -(-3 * train_n // 32) and stsb['data.seq_len'] == 64
  assert 'data.text_pair_key' not in runs['cola_lr=2e-5']
  assert runs['cola_lr=2e-5']['model.num_classes'] == 2
  assert stsb['opt.schedule'] == 'linear' and stsb['opt.weight_decay'] == 0.01


def test_table_from_events(tmp_path, mock_dir, capsys):
  init = _pretrained(str(tmp_path / 'bert'))
  plan = glue.load(init, str(tmp_path / 'runs'), tasks=('cola', 'stsb'), lrs=(1e-5, 2e-5),
                   source_dir=mock_dir)
  logged = {('cola', 1e-5): {'eval/mcc': 0.2}, ('cola', 2e-5): {'eval/mcc': 0.4},
            ('stsb', 2e-5): {'eval/pearson': 0.8, 'eval/spearman': 0.6}}
  for (task, lr), scalars in logged.items():
    with tb.MetricWriter(os.path.join(plan.exp_dir, plan.run_name(task, lr))) as w:
      w.scalars(10, scalars)
  argv = ['--init_from', init, '--workdir', str(tmp_path / 'runs'), '--tasks', 'cola,stsb',
          '--lrs', '1e-5,2e-5', '--source_dir', mock_dir, '--results']
  assert glue_main.main(argv) == 0
  text = open(os.path.join(plan.exp_dir, 'glue.md')).read()
  assert '| cola | 40.0 | 40.0 |' in text and '| 2e-5 |' in text
  assert '| stsb | 70.0 |' in text and '| average (2 of 2 tasks) | 55.0 |' in text
  rows = list(csv.DictReader(open(os.path.join(plan.exp_dir, 'glue.csv'))))
  assert [r['task'] for r in rows][:2] == ['cola', 'stsb'] and float(rows[2]['score']) == pytest.approx(55.0)
  board = read_events(os.path.join(plan.exp_dir, glue_table.TABLE_DIR))['text']['glue']
  assert board[-1][1].startswith('# GLUE')
  assert 'glue.md' in capsys.readouterr().out


@pytest.mark.slow
def test_suite_end_to_end_on_mock_data(tmp_path, mock_dir):
  workdir = str(tmp_path / 'runs')
  tiny = ['--config', 'configs/bert.py:tiny', f'--workdir={workdir}',
          f'--config.data.source=jsonl:{mock_dir}/cola.jsonl', '--config.data.vocab_size=200',
          f'--config.data.data_dir={tmp_path / "data"}', '--config.model.num_layers=1',
          '--config.model.d_model=32', '--config.model.d_ff=64', '--config.model.max_len=32',
          '--config.data.seq_len=32', '--config.train.steps=2', '--config.train.batch_size=4',
          '--config.train.eval_steps=0', '--config.checkpoint.every=2',
          '--config.log.attention_images=false', '--config.log.attention_stats=false',
          '--config.run_name=pre']
  assert train.main(tiny) == 0
  argv = ['--init_from', os.path.join(workdir, 'default', 'pre'), '--workdir', workdir,
          '--tasks', 'cola,stsb', '--lrs', '1e-3', '--epochs', '1', '--batch_size', '8',
          '--source_dir', mock_dir, '--config.log.attention_images=false',
          '--config.log.attention_stats=false', f'--config.data.data_dir={tmp_path / "data"}']
  assert glue_main.main(argv) == 0
  exp = os.path.join(workdir, 'glue')
  rows = {r['task']: r for r in csv.DictReader(open(os.path.join(exp, 'glue.csv')))}
  assert rows['cola']['cola_mcc'] != '' and rows['stsb']['stsb_pearson'] != ''
  scalars = read_events(os.path.join(exp, 'stsb_lr=1e-3'))['scalars']
  assert {'eval/pearson', 'eval/spearman', 'eval/loss'} <= set(scalars)
