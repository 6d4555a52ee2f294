"""Architecture comparisons (transformer/comparisons/, transformer/compare.py): matched FLOPs and the refusal, the
downstream tasks per family, results with intervals rebuilt from event files; slow: a 2-cell
2-seed comparison end to end through the CLI, and resume after a kill."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from transformer.monitoring.writer import MetricWriter
from transformer import compare
from transformer.comparisons import plan as plan_lib
from transformer.comparisons import stats
from transformer.comparisons import tasks as compare_tasks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T5_TABLE2 = os.path.join(REPO, 'experiments', 'compare_t5_table2.py')

# Two cells (the T5 baseline and a decoder-only LM), a generation and a classification task,
# a few steps of everything: each run is a `python -m transformer.train` process.
TWO_CELLS = """
from transformer.comparisons import classification, generation
BASE = 'configs/t5.py'
EXPERIMENT = 'two'
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
}
TASKS = {'docstring': generation('python_stdlib/docstrings', inputs_len=32, targets_len=8,
                                 metrics=('bleu', 'exact_match', 'loss')),
         'package': classification(classes=3, per_class=40, inputs_len=32)}
"""


def _write(tmp_path, text=TWO_CELLS, name='two.py'):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _main(argv, capsys):
  code = compare.main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


# -- the plan: matched FLOPs --------------------------------------------------------------------
def test_t5_table2_cells_get_steps_that_match_the_baseline_flops(tmp_path):
  plan = plan_lib.load(T5_TABLE2, 'tiny', 3, str(tmp_path))
  budget = plan_lib.match_budget(plan)
  base = plan.budget['encdec_denoise']
  assert base['steps'] == plan.module.SCALES['tiny']['pretrain_steps']
  assert budget == pytest.approx(base['flops_per_step'] * base['steps'])
  for cell, row in plan.budget.items():
    assert abs(row['train_flops'] / budget - 1) <= 0.10, cell
    assert row['train_flops'] == row['flops_per_step'] * row['steps']
  # the decoder reads 160 tokens a step through a vocabulary-sized head: fewer steps buy the same
  assert plan.budget['decoder_lm']['steps'] < base['steps']
  shared = plan.budget['encdec_shared_denoise']
  assert shared['params'] < base['params'] and shared['flops_per_step'] == base['flops_per_step']
  assert plan.budget['encdec_prefix']['objective'] == 'prefix_lm'
  assert plan.cells['encdec_prefix']['objective'] == 'seq2seq'   # on (prefix, continuation)


@pytest.mark.parametrize('scale', ['small', 'base'])
def test_published_scales_plan_every_cell_at_matched_flops(tmp_path, scale):
  """The real-hardware scales validate (e.g. the shared cell unrolls its layers, which scan by
  default above tiny) and match the baseline's budget."""
  plan = plan_lib.load(T5_TABLE2, scale, 3, str(tmp_path))
  budget = plan_lib.match_budget(plan)
  assert set(plan.budget) == set(plan.cells)
  for cell, row in plan.budget.items():
    assert abs(row['train_flops'] / budget - 1) <= 0.10, cell


def test_flops_mismatch_is_refused_in_one_line_naming_the_cells(tmp_path, capsys):
  path = _write(tmp_path)
  argv = [path, '--workdir', str(tmp_path), '--list', '--config.train.steps=4']
  code, _, err = _main(argv, capsys)   # same steps for both: the decoder's FLOPs are off
  assert code == 2 and err.count('\n') == 1 and err.startswith('error: pretraining FLOPs')
  assert 'decoder' in err and '--allow_mismatch' in err and 'encdec ' not in err
  code, out, _ = _main(argv + ['--allow_mismatch'], capsys)
  assert code == 0 and 'decoder' in out
  code, _, err = _main([path, '--workdir', str(tmp_path), '--list', '--scale', 'base'], capsys)
  assert code == 2 and '--scale base' in err


def test_slurm_writes_two_chained_arrays(tmp_path, capsys):
  path = _write(tmp_path)
  code, out, _ = _main([path, '--workdir', str(tmp_path), '--seeds', '2', '--slurm'], capsys)
  assert code == 0 and 'submit.sh' in out
  exp_dir = tmp_path / 'two'
  pre, ft = (exp_dir / 'pretrain.sbatch').read_text(), (exp_dir / 'finetune.sbatch').read_text()
  assert '--array=0-3\n' in pre and '--phase pretrain' in pre   # 2 cells x 2 seeds
  assert '--array=0-7\n' in ft and '--phase finetune' in ft     # 2 tasks x 2 cells x 2 seeds
  assert '--dependency=afterok:$pre' in (exp_dir / 'submit.sh').read_text()
  code, _, err = _main([path, '--workdir', str(tmp_path), '--index', '0'], capsys)
  assert code == 2 and '--phase' in err


# -- downstream tasks ---------------------------------------------------------------------------
def test_each_family_is_fine_tuned_the_way_it_can_or_says_why(tmp_path):
  docstring = compare_tasks.generation('python_stdlib/docstrings', inputs_len=100, targets_len=20)
  package = compare_tasks.classification(classes=4)
  assert compare_tasks.finetune_overrides(docstring, 'encoder', 'x', 64)[0] is None
  assert 'no decoder' in compare_tasks.finetune_overrides(docstring, 'encoder', 'x', 64)[1]
  dec, _ = compare_tasks.finetune_overrides(docstring, 'decoder', 'x', 64)
  assert dec['objective'] == 'seq2seq' and dec['data.seq_len'] == 120
  assert dec['log.decode.examples'] == 64 and dec['log.decode.max_new_tokens'] == 20
  enc_dec, _ = compare_tasks.finetune_overrides(package, 'encoder_decoder', 'x', 64)
  assert enc_dec['objective'] == 'seq2seq' and enc_dec['data.targets_key'] == 'name'
  head, _ = compare_tasks.finetune_overrides(package, 'encoder', 'x', 64)
  assert head['objective'] == 'classification' and head['model.num_classes'] == 4
  assert head['data.source'] == 'jsonl:' + compare_tasks.package_file('x')


def test_package_examples_and_prefix_pairs():
  files = [(f'{pkg}/mod{i}.py', f'def f{i}(x):\n  """Return the {pkg} value of x."""\n  return x\n')
           for pkg, n in (('big', 5), ('mid', 3), ('small', 1)) for i in range(n)]
  files.append(('toplevel.py', 'def g(x):\n  """A top-level module function."""\n  return x\n'))
  records = compare_tasks.package_examples(2, 4, files)
  assert sorted({(r['name'], r['label']) for r in records}) == [('big', 0), ('mid', 1)]
  assert sum(r['name'] == 'big' for r in records) == 4   # capped per class
  assert all('"""' not in r['text'] and r['text'].startswith('def ') for r in records)
  text = ' '.join(f'word{i}' for i in range(400))
  (pair,) = compare_tasks.prefix_pairs([text], max_chars=100)
  assert len(pair['inputs']) <= 100 and text.count(pair['inputs'] + ' ' + pair['targets']) == 1
  assert text.endswith(pair['targets'])   # the continuation starts right after the prefix


# -- results from event files -------------------------------------------------------------------
def _fake_run(exp_dir, name, scalars, seconds=10.0, decodes=None):
  run_dir = os.path.join(exp_dir, name)
  with MetricWriter(run_dir) as writer:
    for step, values in scalars:
      writer.scalars(step, values)
  with open(os.path.join(run_dir, 'sweep_status.json'), 'w') as f:
    json.dump({'status': 'done', 'seconds': seconds}, f)
  if decodes is not None:
    os.makedirs(os.path.join(run_dir, 'decodes'))
    for step, rows in decodes.items():
      with open(os.path.join(run_dir, 'decodes', f'step_{step}.jsonl'), 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in rows)


def test_results_rebuild_tables_with_intervals_from_event_files(tmp_path, capsys):
  path = _write(tmp_path)
  exp_dir = str(tmp_path / 'two')
  bleu = {'encdec': [31.2, 29.8, 30.5], 'decoder': [28.0, 28.9, 27.1]}
  accuracy = {'encdec': [1.0, 0.5, 0.5], 'decoder': [0.5, 0.25, 0.75]}   # 4 decodes / head
  for cell in ('encdec', 'decoder'):
    for s in range(3):
      _fake_run(exp_dir, f'pre_{cell}_s{s}', [(4, {'train/tokens_seen': 1000.0 + s})], 20.0)
      right = {'prediction': 'a  b', 'reference': 'a b', 'input': ''}
      wrong = {'prediction': 'a', 'reference': 'b', 'input': ''}
      _fake_run(exp_dir, f'ft_docstring_{cell}_s{s}',
                [(1, {'eval/loss': 9.0}), (2, {'eval/bleu': bleu[cell][s], 'eval/loss': 4.0 + s})],
                decodes={1: [wrong] * 4, 2: [right] * (s + 1) + [wrong] * (3 - s)})
      if cell == 'encdec':   # text-to-text classification: the exact match of its decodes
        n = int(4 * accuracy[cell][s])
        _fake_run(exp_dir, f'ft_package_{cell}_s{s}', [(2, {'eval/loss': 1.0})],
                  decodes={2: [right] * n + [wrong] * (4 - n)})
      else:
        _fake_run(exp_dir, f'ft_package_{cell}_s{s}', [(2, {'eval/accuracy': accuracy[cell][s]})])
  code, out, _ = _main([path, '--workdir', str(tmp_path), '--results', '--seeds', '3'], capsys)
  assert code == 0, out
  table = open(os.path.join(exp_dir, 'comparison.md')).read()
  assert stats.mean_interval(bleu['encdec']).text() == '30.50 ± 1.74'
  # BLEU; exact match 25, 50, 75 %: sd 25, half width 4.302653 * 25 / sqrt(3) = 62.1
  assert '| 30.50 ± 1.74 | 50.00 ± 62.10 | 5.00 ± 2.48 |' in table   # loss: the last eval
  # the paired BLEU difference decoder - encdec: test_stats' example with the sign flipped
  assert ('| decoder | -2.50 [-5.95, +0.95] | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] |'
          in table)
  assert '| 1K |' in table and '| 20 |' in table   # tokens seen, wall seconds
  with open(os.path.join(exp_dir, 'comparison.csv')) as f:
    rows = {(r['cell'], r['task'], r['metric']): r for r in csv.DictReader(f)}
  got = rows[('encdec', 'package', 'accuracy')]
  assert float(got['mean']) == pytest.approx(100 * 2 / 3) and got['n'] == '3'
  assert float(rows[('decoder', 'package', 'accuracy')]['mean']) == pytest.approx(50.0)
  assert float(rows[('decoder', 'docstring', 'bleu')]['diff_mean']) == pytest.approx(-2.5)
  assert os.path.getsize(os.path.join(exp_dir, 'comparison.png')) > 1000


# -- end to end ---------------------------------------------------------------------------------
def _cli(args, **kwargs):
  return subprocess.run([sys.executable, '-m', 'transformer.compare', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=1500, **kwargs)


@pytest.mark.slow
def test_two_cells_two_seeds_pretrain_finetune_table(tmp_path):
  path = _write(tmp_path)
  proc = _cli([path, '--workdir', str(tmp_path), '--seeds', '2', '--parallel', '2'])
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  exp_dir = tmp_path / 'two'
  for run in ('pre_encdec_s0', 'pre_decoder_s1', 'ft_docstring_encdec_s1',
              'ft_docstring_decoder_s0', 'ft_package_encdec_s0', 'ft_package_decoder_s1'):
    assert json.loads((exp_dir / run / 'sweep_status.json').read_text())['status'] == 'done', run
  config = json.loads((exp_dir / 'ft_docstring_decoder_s0' / 'config.json').read_text())
  assert config['checkpoint']['init_from'].endswith('pre_decoder_s0')
  assert 'Initialised from' in (exp_dir / 'ft_docstring_decoder_s0' / 'train.log').read_text()
  with open(exp_dir / 'comparison.csv') as f:
    rows = {(r['cell'], r['task'], r['metric']): r for r in csv.DictReader(f)}
  for key in [('encdec', 'docstring', 'bleu'), ('decoder', 'docstring', 'exact_match'),
              ('encdec', 'package', 'accuracy'), ('decoder', 'package', 'accuracy')]:
    assert rows[key]['n'] == '2' and rows[key]['low'] not in ('', 'nan'), key
  assert rows[('decoder', 'docstring', 'bleu')]['diff_mean'] != ''
  assert ' ± ' in (exp_dir / 'comparison.md').read_text()
  again = _cli([path, '--workdir', str(tmp_path), '--seeds', '2', '--results'])
  assert again.returncode == 0 and 'Paired difference' in again.stdout


def _wait_for(predicate, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    time.sleep(1)
  return False


@pytest.mark.slow
def test_killed_comparison_resumes_without_retraining_finished_runs(tmp_path):
  path = _write(tmp_path)
  args = [path, '--workdir', str(tmp_path), '--seeds', '2', '--phase', 'pretrain']
  first = tmp_path / 'two' / 'pre_encdec_s0'
  proc = subprocess.Popen([sys.executable, '-m', 'transformer.compare', *args], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  try:
    done = lambda: (first / 'sweep_status.json').exists() and json.loads(
        (first / 'sweep_status.json').read_text())['status'] == 'done'
    assert _wait_for(done, 900)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)   # the comparison and the run it had started next
    proc.wait()
  events = sorted(os.listdir(first))
  again = _cli(args)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  assert '[sweep] skip   pre_encdec_s0' in again.stdout
  assert sorted(os.listdir(first)) == events   # not retrained: no new event file
  assert (first / 'train.log').read_text().count('Finished 4 steps') == 1
  for run in ('pre_encdec_s1', 'pre_decoder_s0', 'pre_decoder_s1'):
    status = json.loads((tmp_path / 'two' / run / 'sweep_status.json').read_text())
    assert status['status'] == 'done', run
