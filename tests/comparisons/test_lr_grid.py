"""The per-cell learning-rate grid of a comparison (transformer/comparisons/lr_grid.py): the
declaration is checked, the dev split is disjoint from what fine-tuning and the test list read,
every cell gets the value of its own best dev score, the reported runs use it and the table
says which; slow: the grid end to end through the CLI."""

import csv
import json
import os
import subprocess
import sys

import pytest

from transformer import compare
from transformer.comparisons import budget as budget_lib
from transformer.comparisons import lr_grid
from transformer.comparisons import plan as plan_lib
from transformer.comparisons import results
from transformer.errors import ConfigError
from transformer.monitoring.writer import MetricWriter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DECLARATION = """
from transformer.comparisons import classification, generation
BASE = 'configs/t5.py'
EXPERIMENT = 'grid'
BASELINE = 'encdec'
_COMMON = {'train.batch_size': 4, 'data.vocab_size': 512, 'train.eval_steps': 1,
           'log.samples': 0, 'log.attention_images': False, 'opt.warmup_steps': 1,
           'train.log_every': 2, 'data.tokenizer_train_examples': 400,
           'checkpoint.async_save': False, 'model.d_model': 32, 'model.d_ff': 64,
           'model.num_heads': 2, 'model.head_dim': 16}
SCALES = {'tiny': {'size': 'tiny', 'pretrain_steps': 4, 'pretrain': _COMMON,
                   'finetune': {**_COMMON, 'train.steps': 2, 'train.eval_steps': 2}}}
CELLS = {
    'encdec': {'model.family': 'encoder_decoder', 'objective': 'span_corruption',
               'data.seq_len': 64, 'data.targets_len': 16},
    'decoder': {'model.family': 'decoder', 'objective': 'causal_lm', 'data.seq_len': 80},
    'scratch': {'model.family': 'decoder', 'data.seq_len': 80, 'pretrain': False},
}
TASKS = {'docstring': generation('python_stdlib/docstrings', inputs_len=32, targets_len=8),
         'package': classification(classes=3, per_class=40, inputs_len=32)}
LR_GRID = {'tiny': {'pretrain': (1e-3, 1e-2), 'finetune': (3e-4, 3e-3)}}
"""


def _declaration(tmp_path, text=DECLARATION):
  path = tmp_path / 'grid.py'
  path.write_text(text)
  return str(path)


def _plan(tmp_path, **kwargs):
  plan = plan_lib.load(_declaration(tmp_path), 'tiny', 2, str(tmp_path), tune_lr=True, **kwargs)
  budget_lib.match_budget(plan)
  return plan


def _finished(run_dir, scalars=(), scores=None, status='done'):
  with MetricWriter(str(run_dir)) as writer:
    for step, values in scalars:
      writer.scalars(step, values)
  with open(os.path.join(run_dir, 'sweep_status.json'), 'w') as f:
    json.dump({'status': status}, f)
  if scores is not None:
    os.makedirs(os.path.join(run_dir, 'scores'))
    with open(os.path.join(run_dir, 'scores', 'step_2.jsonl'), 'w') as f:
      f.writelines(json.dumps({'id': str(i), **r}) + '\n' for i, r in enumerate(scores))


# -- the declaration ----------------------------------------------------------------------------
@pytest.mark.parametrize('grid, message', [
    ('', 'declares no LR_GRID for scale'),
    ("LR_GRID = {'tiny': {'pretrain': (1e-3, -1.0)}}", "has -1.0; give positive learning rates"),
    ("LR_GRID = {'tiny': {'pretrain': (1e-3, 1e-3)}}", 'lists a value twice'),
    ("LR_GRID = {'tiny': {'fine_tune': (1e-3,)}}", "has 'fine_tune'; its keys are pretrain and"),
])
def test_a_bad_grid_is_one_line_naming_it(tmp_path, grid, message):
  text = DECLARATION.replace("LR_GRID = {'tiny': {'pretrain': (1e-3, 1e-2), 'finetune': "
                             "(3e-4, 3e-3)}}", grid)
  with pytest.raises(ConfigError, match='LR_GRID') as err:
    plan_lib.load(_declaration(tmp_path, text), 'tiny', 2, str(tmp_path), tune_lr=True)
  assert message in str(err.value) and '\n' not in str(err.value)


def test_the_grid_refuses_a_pinned_learning_rate_and_slurm(tmp_path, capsys):
  with pytest.raises(ConfigError, match='--config.opt.learning_rate: --lr_grid chooses'):
    _plan(tmp_path, extra={'opt.learning_rate': 1e-3})
  code = compare.main([_declaration(tmp_path), '--workdir', str(tmp_path), '--lr_grid',
                       '--slurm'])
  assert code == 2 and '--lr_grid: the learning-rate grid runs locally' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'grid')   # nothing written


# -- the dev split ------------------------------------------------------------------------------
def test_the_dev_split_is_fixed_disjoint_and_capped():
  records = [{'id': f'fn:m{i}.py:{i}:f', 'inputs': 'x', 'targets': 'y'} for i in range(400)]
  train, dev = lr_grid.split_dev(records, limit=1000)
  assert 20 < len(dev) < 70   # ~1 in DEV_BUCKETS
  assert {r['id'] for r in train}.isdisjoint(r['id'] for r in dev)
  assert len(train) + len(dev) == len(records)
  assert lr_grid.split_dev(list(reversed(records)), 1000)[1] == list(reversed(dev))  # by id
  assert len(lr_grid.split_dev(records, limit=5)[1]) == 5


# -- the runs -----------------------------------------------------------------------------------
def _task_files(plan):
  for task in plan.tasks:
    folder = os.path.join(plan.exp_dir, 'data', task)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'train.jsonl'), 'w') as f:
      f.writelines(json.dumps({'id': f'{task}{i}', 'inputs': 'a', 'targets': 'b', 'text': 'a',
                               'label': 0, 'name': 'p'}) + '\n' for i in range(200))


def test_tuning_runs_use_seed_zero_dev_data_and_the_reported_runs_use_the_choice(tmp_path):
  plan = _plan(tmp_path)
  reported = plan_lib.pretrain_runs(plan, 'tok.model')
  tuning = lr_grid.pretrain_runs(plan, reported)
  assert sorted(r['run_name'] for r in tuning) == [
      'tune_pre_decoder_lr0.001', 'tune_pre_decoder_lr0.01', 'tune_pre_encdec_lr0.001',
      'tune_pre_encdec_lr0.01']   # no control: it is not pretrained
  assert {r['train.seed'] for r in tuning} == {lr_grid.TUNE_SEED}
  assert lr_grid.TUNE_SEED not in {r['train.seed'] for r in reported}
  by_name = {r['run_name']: r for r in reported}
  for r in tuning:   # the cell's own budget, only the learning rate and the seed differ
    base = by_name['pre_' + r['run_name'][len('tune_pre_'):].rsplit('_lr', 1)[0] + '_s0']
    assert {k: v for k, v in r.items() if base.get(k) != v} == {
        'run_name': r['run_name'], 'train.seed': lr_grid.TUNE_SEED,
        'opt.learning_rate': r['opt.learning_rate']}

  for lr, loss in ((1e-3, 3.0), (1e-2, 2.5)):   # encdec: 1e-2 wins; decoder: 1e-3 (1e-2 failed)
    _finished(tmp_path / 'grid' / lr_grid.tune_name('pretrain', lr, 'encdec'),
              [(4, {'eval/loss': loss})])
  _finished(tmp_path / 'grid' / 'tune_pre_decoder_lr0.001', [(4, {'eval/loss': 4.0})])
  _finished(tmp_path / 'grid' / 'tune_pre_decoder_lr0.01', [(2, {'eval/loss': 1.0})],
            status='failed')
  lr_grid.choose(plan, 'pretrain')
  chosen = {r['run_name']: r['opt.learning_rate'] for r in plan_lib.pretrain_runs(plan, 't')}
  assert chosen == {'pre_encdec_s0': 1e-2, 'pre_encdec_s1': 1e-2, 'pre_decoder_s0': 1e-3,
                    'pre_decoder_s1': 1e-3}

  _task_files(plan)
  finished = {r['run_name'] for r in reported}
  tuning = lr_grid.finetune_runs(plan, plan_lib.finetune_runs(plan, finished, 'tok.model'))
  assert len(tuning) == 2 * 3 * 2   # tasks x cells (the control too) x values
  for r in tuning:                       # no score or training file is the test list's
    assert r['log.score.file'].endswith('dev.jsonl')
    assert r['data.source'].endswith('tune_train.jsonl')
    assert r['checkpoint.init_from' if 'scratch' not in r['run_name'] else 'data.tokenizer']
  dev = {json.loads(line)['id'] for line in open(lr_grid.dev_file(plan.exp_dir, 'package'))}
  train = {json.loads(line)['id'] for line in open(lr_grid.tune_train_file(plan.exp_dir,
                                                                           'package'))}
  assert dev and train and not dev & train and len(dev | train) == 200


def test_fine_tuning_picks_the_best_dev_accuracy_and_breaks_ties_by_loss(tmp_path):
  plan = _plan(tmp_path, tasks=['package'])
  plan_lib.finetune_runs(plan)   # fills plan.skipped (none for package)
  assert results.describe(plan).endswith('pretrain 0.001, 0.01 (4 tuning runs); finetune '
                                         '0.0003, 0.003 (6 tuning runs)')
  exp = tmp_path / 'grid'
  dev = {  # (correct of 4, summed loss): encdec ties on accuracy, the lower loss wins
      'encdec': {3e-4: (3, 4.0), 3e-3: (3, 2.0)},
      'decoder': {3e-4: (4, 8.0), 3e-3: (2, 1.0)},
      'scratch': {3e-4: (1, 1.0), 3e-3: (2, 9.0)}}
  for cell, values in dev.items():
    for lr, (right, loss) in values.items():
      _finished(exp / lr_grid.tune_name('finetune', lr, cell, 'package'), scores=[
          {'correct': int(i < right), 'loss': loss / 4, 'tokens': 1} for i in range(4)])
  lr_grid.choose(plan, 'finetune')
  assert {c: lr_grid.used(lr_grid.read(str(exp)), c, 'package') for c in dev} == {
      'encdec': 3e-3, 'decoder': 3e-4, 'scratch': 3e-3}
  runs = {r['run_name']: r['opt.learning_rate'] for r in plan_lib.finetune_runs(plan)}
  assert runs['ft_package_encdec_s1'] == 3e-3 and runs['ft_package_decoder_s0'] == 3e-4
  record = json.loads((exp / lr_grid.CHOICE_FILE).read_text())
  assert record['finetune']['package']['decoder']['dev']['0.0003'] == [-100.0, 2.0]

  text = results.write(plan)   # the table says which value each cell used
  assert '| decoder |  | 0.0003 |' in text and '| scratch | n/a (control) | 0.003 |' in text
  with open(exp / 'comparison.csv') as f:
    used = {r['cell']: r['lr_finetune'] for r in csv.DictReader(f)}
  assert used == {'encdec': '0.003', 'decoder': '0.0003', 'scratch': '0.003'}


def test_a_cell_whose_every_value_failed_is_one_line(tmp_path):
  plan = _plan(tmp_path)
  for lr in (1e-3, 1e-2):
    _finished(tmp_path / 'grid' / lr_grid.tune_name('pretrain', lr, 'encdec'), status='failed')
  with pytest.raises(ConfigError, match=r'no learning rate of cell encdec finished \(0.001, '
                     r'0.01\); see tune_\*/train.log'):
    lr_grid.choose(plan, 'pretrain')


# -- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_grid_end_to_end_chooses_and_the_reported_runs_use_it(tmp_path):
  """One cell (the baseline, a decoder here), two values per phase: six short runs."""
  text = DECLARATION.split('CELLS = {')[0].replace("BASELINE = 'encdec'", "BASELINE = 'decoder'")
  text += ("CELLS = {'decoder': {'model.family': 'decoder', 'objective': 'causal_lm', "
           "'data.seq_len': 80}}\n" + 'TASKS' + DECLARATION.split('TASKS')[1])
  path = _declaration(tmp_path, text)
  proc = subprocess.run([sys.executable, '-m', 'transformer.compare', path, '--workdir',
                         str(tmp_path), '--seeds', '1', '--tasks', 'package', '--lr_grid'],
                        cwd=REPO, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  exp = tmp_path / 'grid'
  assert len([d for d in os.listdir(exp) if d.startswith('tune_')]) == 4
  record = json.loads((exp / lr_grid.CHOICE_FILE).read_text())
  for cell in ('decoder',):
    chosen = record['pretrain'][cell]['chosen']
    config = json.loads((exp / f'pre_{cell}_s0' / 'config.json').read_text())
    assert config['opt']['learning_rate'] == chosen
    chosen = record['finetune']['package'][cell]['chosen']
    config = json.loads((exp / f'ft_package_{cell}_s0' / 'config.json').read_text())
    assert config['opt']['learning_rate'] == chosen
    assert config['log']['score']['file'].endswith('test.jsonl')
  assert 'Learning rates chosen per cell on dev data' in (exp / 'comparison.md').read_text()
