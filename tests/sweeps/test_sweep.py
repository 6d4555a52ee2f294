"""Sweeps: declaration helpers, run names, the process runner (failures, resume), results files."""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from transformer import cli
from transformer import config as config_lib
from transformer.training import optim
from transformer import sweep as sweeps_main
from transformer.sweeps import declarations, results, slurm
from transformer.sweeps import runner as sw
from transformer.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny and fast: every run is a separate `python -m transformer.train` process of 4 steps.
TINY_SWEEP = """
from transformer.sweeps import grid
BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'tiny_grid'
OVERRIDES = {'train.steps': 6, 'train.batch_size': 4, 'data.seq_len': 32,
             'data.vocab_size': 1024, 'train.eval_every': 2, 'train.eval_steps': 1,
             'train.log_every': 2, 'checkpoint.every': 2, 'log.samples': 0,
             'log.attention_images': False, 'checkpoint.async_save': False,
             'model.d_model': 32, 'model.d_ff': 64, 'model.num_heads': 2}
def sweep():
  return grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [1, 2]})
"""


def write(path, text):
  path.write_text(text)
  return str(path)


# -- declaration ------------------------------------------------------------------------------
def test_grid_is_the_cartesian_product_last_key_fastest():
  runs = declarations.grid({'a': [1, 2], 'b': ['x', 'y', 'z']})
  assert len(runs) == 6
  assert runs[0] == {'a': 1, 'b': 'x'} and runs[1] == {'a': 1, 'b': 'y'}
  assert runs[-1] == {'a': 2, 'b': 'z'}


def test_zipped_pairs_values_and_rejects_unequal_lengths():
  assert declarations.zipped({'a': [1, 2], 'b': [3, 4]}) == [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  with pytest.raises(ConfigError, match='same length'):
    declarations.zipped({'a': [1, 2], 'b': [3]})


def test_sample_is_reproducible_and_inside_the_space():
  space = {'opt.learning_rate': declarations.log_uniform(1e-4, 1e-2), 'model.num_layers': declarations.choice([2, 4]),
           'opt.b2': declarations.uniform(0.9, 0.99), 'train.steps': 10}
  runs = declarations.sample(20, 0, space)
  assert runs == declarations.sample(20, 0, space)
  assert runs != declarations.sample(20, 1, space)
  assert all(1e-4 <= r['opt.learning_rate'] <= 1e-2 for r in runs)
  assert {r['model.num_layers'] for r in runs} == {2, 4}
  assert all(0.9 <= r['opt.b2'] <= 0.99 and r['train.steps'] == 10 for r in runs)


@pytest.mark.parametrize('value,text', [(3e-4, '3e-4'), (0.001, '1e-3'), (0.0125, '1.25e-2'),
                                        (0.5, '0.5'), (4, '4'), (True, 'true'),
                                        ('python_stdlib/text', 'python_stdlib_text'),
                                        ((2, 4), '2-4'), (float('inf'), 'inf'),
                                        (float('nan'), 'nan')])
def test_format_value(value, text):
  assert sw.format_value(value) == text


def test_run_name_uses_aliases_and_only_swept_keys():
  overrides = {'opt.learning_rate': 3e-4, 'model.num_layers': 4, 'train.steps': 10}
  assert sw.run_name(overrides, ['opt.learning_rate', 'model.num_layers']) == 'lr=3e-4,layers=4'
  assert sw.run_name({**overrides, 'run_name': 'mine'}) == 'mine'


def test_sweep_file_sets_experiment_run_name_and_fixed_overrides(tmp_path):
  sweep = sw.Sweep(write(tmp_path / 's.py', TINY_SWEEP), {'train.seed': '3'})
  assert sweep.experiment == 'tiny_grid'
  assert [r['name'] for r in sweep.runs] == ['lr=1e-3,layers=1', 'lr=1e-3,layers=2',
                                             'lr=3e-3,layers=1', 'lr=3e-3,layers=2']
  assert sweep.swept_keys == ['opt.learning_rate', 'model.num_layers']
  config = sweep.load_config(sweep.runs[3])
  assert (config.experiment, config.run_name) == ('tiny_grid', 'lr=3e-3,layers=2')
  assert config.opt.learning_rate == 3e-3 and config.model.num_layers == 2
  assert config.train.steps == 6 and config.train.seed == 3
  argv = sweep.command(sweep.runs[3], '/w')
  assert argv[1:3] == ['-m', 'transformer.train']
  assert '--config.opt.learning_rate=0.003' in argv and '--config.experiment=tiny_grid' in argv


def test_sweep_file_errors_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match='not found'):
    sw.Sweep(str(tmp_path / 'missing.py'))
  with pytest.raises(ConfigError, match='define EXPERIMENT'):
    sw.Sweep(write(tmp_path / 'a.py', "BASE = 'configs/gpt2.py:tiny'\ndef sweep(): return [{}]\n"))
  bad = sw.Sweep(write(tmp_path / 'b.py', TINY_SWEEP.replace("'opt.learning_rate'",
                                                             "'opt.learning_rat'")))
  with pytest.raises(ConfigError, match='opt.learning_rat'):
    bad.load_config(bad.runs[0])


ROUND_TRIP = [
    ('train.steps', 7), ('train.seed', -3), ('opt.learning_rate', 1e-3),
    ('opt.learning_rate', 3e-4), ('opt.learning_rate', 1.5e-20), ('opt.learning_rate', 2),
    ('opt.b2', float('nan')), ('opt.eps', float('inf')), ('model.scan_layers', True),
    ('checkpoint.keep_best', False), ('data.source', 'text:/a dir/x,y=z.txt'),
    ('data.tokenizer', ''), ('run_name', 'lr=1e-3,layers=2'), ('mesh.shape', (1, -1, 1)),
    ('mesh.rules', (('mlp', 'tensor'),)), ('mesh.rules', (('mlp', 'tensor'), ('heads', None))),
    ('mesh.rules', ()),
]


def _lookup(config, key):
  for name in key.split('.'):
    config = config[name]
  return config


@pytest.mark.parametrize('key,value', ROUND_TRIP, ids=[f'{k}={v!r}' for k, v in ROUND_TRIP])
def test_swept_values_reach_the_child_process_unchanged(tmp_path, monkeypatch, key, value):
  """The child parses its --config.KEY=TEXT back to the value the runner validated."""
  monkeypatch.setattr(config_lib, 'validate', lambda config: None)  # values, not their ranges
  sweep = sw.Sweep(write(tmp_path / 's.py', "from math import inf, nan\nBASE = "
                         f"'configs/gpt2.py:tiny'\nEXPERIMENT = 'rt'\n"
                         f"def sweep():\n  return [{{{key!r}: {value!r}}}]\n"))
  run = sweep.runs[0]
  argv = sweep.command(run, str(tmp_path))
  _, child = cli.parse(argv[argv.index('--config'):])
  runner = _lookup(sweep.load_config(run), key)
  got = _lookup(child, key)
  assert type(got) is type(runner) and repr(got) == repr(runner), (argv, got, runner)
  assert runner == value or value != value


def test_a_sweep_over_one_nested_mesh_rule_validates_in_the_child(tmp_path):
  sweep = sw.Sweep(write(tmp_path / 's.py', TINY_SWEEP.replace(
      "grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [1, 2]})",
      "grid({'mesh.rules': [(('mlp', 'tensor'),), (('heads', 'tensor'), ('mlp', None))]})")))
  for run in sweep.runs:
    argv = sweep.command(run, str(tmp_path))
    _, child = cli.parse(argv[argv.index('--config'):])   # exits 2 on a refused value
    assert child.mesh.rules == sweep.load_config(run).mesh.rules == run['overrides']['mesh.rules']


def test_slurm_script_has_one_array_task_per_run(tmp_path):
  sweep = sw.Sweep(write(tmp_path / 's.py', TINY_SWEEP))
  script = slurm.slurm_script(sweep, str(tmp_path / 'w'), parallel=2)
  assert '#SBATCH --array=0-3%2' in script
  assert '--index "$SLURM_ARRAY_TASK_ID"' in script
  assert all(r['name'] in script for r in sweep.runs)
  assert sweeps_main.main([str(tmp_path / 's.py'), '--workdir', str(tmp_path / 'w'), '--slurm']) == 0
  assert (tmp_path / 'w' / 'tiny_grid' / 'sweep.sbatch').exists()


# -- the runner ---------------------------------------------------------------------------------
def test_a_failed_run_is_recorded_and_does_not_stop_the_others(tmp_path):
  ok, bad, also_ok = (str(tmp_path / n) for n in ('ok', 'bad', 'also_ok'))
  jobs = [sw.Job('bad', bad, [sys.executable, '-c',
                              'import sys; print("error: data.source is broken", '
                              'file=sys.stderr); sys.exit(2)']),
          sw.Job('ok', ok, [sys.executable, '-c', 'print("trained")']),
          sw.Job('also_ok', also_ok, [sys.executable, '-c', 'pass'])]
  outcome = sw.execute(jobs, parallel=2, poll_s=0.05, log=lambda _: None)
  assert outcome == {'bad': 'failed', 'ok': 'done', 'also_ok': 'done'}
  status = results.read_status(bad)
  assert status['status'] == 'failed' and status['returncode'] == 2
  assert status['error'] == 'error: data.source is broken'
  assert results.read_status(ok)['status'] == 'done'
  assert 'trained' in open(os.path.join(ok, sw.LOG_FILE)).read()


def test_total_steps_counts_tokens_at_full_packing():
  """The one run-length formula the runner and the trainer share (training/optim.py)."""
  assert optim.total_steps(config_lib.load('configs/gpt2.py:tiny', {'train.steps': 7})) == 7
  config = config_lib.load('configs/gpt2.py:tiny', {'train.tokens': 10_000,
                                                   'train.batch_size': 3})
  assert optim.total_steps(config) == 27   # ceil(10000 / (3 * 128))


def test_finished_step_reads_orbax_step_directories(tmp_path):
  assert sw.finished_step(str(tmp_path)) is None
  for name in ('2', '4', '6.orbax-checkpoint-tmp-1', '8.corrupt'):
    (tmp_path / 'checkpoints' / name).mkdir(parents=True)
  assert sw.finished_step(str(tmp_path)) == 4


def test_a_run_with_a_bad_config_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
  path = write(tmp_path / 's.py', TINY_SWEEP.replace("'model.num_layers': [1, 2]",
                                                     "'model.num_heads': [2, 3]"))
  started = []
  monkeypatch.setattr(sw, 'execute', lambda jobs, **_: started.extend(jobs) or {
      job.name: 'done' for job in jobs})
  outcome = sw.run(sw.Sweep(path), str(tmp_path / 'w'), log=lambda _: None)
  assert outcome == {'lr=1e-3,heads=2': 'done', 'lr=1e-3,heads=3': 'failed',
                     'lr=3e-3,heads=2': 'done', 'lr=3e-3,heads=3': 'failed'}
  assert [j.name for j in started] == ['lr=1e-3,heads=2', 'lr=3e-3,heads=2']
  assert started[0].steps == 6   # the steps the run must reach to count as done
  status = results.read_status(str(tmp_path / 'w' / 'tiny_grid' / 'lr=1e-3,heads=3'))
  assert status['status'] == 'failed' and 'model.num_heads=3' in status['error']


def test_a_clean_exit_before_the_last_step_is_interrupted_not_done(tmp_path):
  run_dir = str(tmp_path / 'r')
  outcome = sw.execute([sw.Job('r', run_dir, [sys.executable, '-c', 'pass'], 4)],
                       log=lambda _: None)
  assert outcome == {'r': 'interrupted'} and results.read_status(run_dir)['returncode'] == 0


@pytest.mark.parametrize('text,message', [
    ("EXPERIMENT = 'x'\ndef sweep(): return [{}]\n", 'define BASE'),
    (TINY_SWEEP.replace("'train.steps'", "'train.stepz'"), 'train.stepz'),
    (TINY_SWEEP.replace("BASE = 'configs/gpt2.py:tiny'", "BASE = 'configs/nope.py:tiny'"),
     'nope.py'),
    ("from transformer.sweeps import zipped\nBASE = 'configs/gpt2.py:tiny'\nEXPERIMENT = 'x'\n"
     "def sweep(): return zipped({'opt.learning_rate': [1, 2], 'train.steps': [3]})\n",
     'same length')])
def test_bad_sweep_files_give_one_line_errors(tmp_path, capsys, text, message):
  path = write(tmp_path / 'bad.py', text)
  assert sweeps_main.main([path, '--workdir', str(tmp_path / 'w'), '--max_runs', '0']) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith('error: ') and message in err, err
  assert not list(tmp_path.rglob(results.STATUS_FILE))   # nothing ran


# -- a real sweep: 4 tiny runs, stopped after 2, restarted -------------------------------------
SWEEP_ENV = {'JAX_COMPILATION_CACHE_DIR': os.path.join(tempfile.gettempdir(),
                                                       'transformer_tests_jax_cache'),
             'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
             'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
RUN_TIMEOUT_S = 600


def _sweep_cli(path, workdir, *flags):
  return [sys.executable, '-m', 'transformer.sweep', path, '--workdir', workdir, *flags]


def _run_cli(path, workdir, *flags):
  return subprocess.run(_sweep_cli(path, workdir, *flags), env=dict(os.environ, **SWEEP_ENV),
                        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                        check=False)


def _statuses(exp_dir, names):
  return {n: results.read_status(os.path.join(exp_dir, n)) for n in names}


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
  """The sweep CLI twice, as a user would: `--max_runs 2 --parallel 2` (runs 0 and 1 train side
  by side, 2 and 3 stay pending), then `--parallel 2` again (0 and 1 skipped, 2 and 3 train)."""
  tmp = tmp_path_factory.mktemp('grid')
  path = write(tmp / 'tiny_sweep.py', TINY_SWEEP)
  workdir = str(tmp / 'w')
  exp_dir = os.path.join(workdir, 'tiny_grid')
  names = [r['name'] for r in sw.Sweep(path).runs]
  out = {'path': path, 'workdir': workdir, 'exp_dir': exp_dir, 'names': names}
  first = _run_cli(path, workdir, '--max_runs', '2', '--parallel', '2')
  out['first'] = (first, _statuses(exp_dir, names))
  second = _run_cli(path, workdir, '--parallel', '2')
  out['second'] = (second, _statuses(exp_dir, names))
  return out


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_max_runs_starts_two_runs_side_by_side(grid):
  proc, status = grid['first']
  assert proc.returncode == 0, proc.stderr[-3000:]
  a, b, c, d = (status[n] for n in grid['names'])
  assert a['status'] == b['status'] == 'done' and c == d == {}
  # --parallel 2: the two runs overlapped in time
  assert a['started'] < b['started'] + b['seconds'] and b['started'] < a['started'] + a['seconds']
  assert proc.stdout.count('| pending |') == 2


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_the_restarted_sweep_runs_only_the_rest(grid):
  proc, status = grid['second']
  assert proc.returncode == 0, proc.stderr[-3000:]
  names = grid['names']
  assert [f'skip   {n}' in proc.stdout for n in names] == [True, True, False, False]
  assert [f'start  {n}' in proc.stdout for n in names] == [False, False, True, True]
  assert all(status[n]['status'] == 'done' for n in names), status
  assert status[names[0]]['started'] == grid['first'][1][names[0]]['started']   # not rerun


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_results_have_one_row_per_run_with_the_swept_values(grid):
  exp_dir, names = grid['exp_dir'], grid['names']
  with open(os.path.join(exp_dir, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['run'] for r in rows] == names
  assert [(float(r['opt.learning_rate']), int(r['model.num_layers'])) for r in rows] == [
      (1e-3, 1), (1e-3, 2), (3e-3, 1), (3e-3, 2)]
  for r in rows:
    assert r['status'] == 'done'
    assert float(r['final_eval_loss']) > 0 and float(r['best_eval_loss']) <= float(
        r['final_eval_loss'])
    assert 0 <= float(r['final_eval_accuracy']) <= 1
    assert float(r['tokens_per_sec']) > 0 and int(float(r['steps'])) == 6
    assert float(r['tokens_seen']) > 0
  assert int(float(rows[1]['params'])) > int(float(rows[0]['params']))   # 2 layers > 1 layer
  md = open(os.path.join(exp_dir, 'results.md')).read()
  assert len([l for l in md.splitlines() if l.startswith('| lr=')]) == 4
  assert all(f'| {n} |' in md for n in names)
  assert md.splitlines()[2] in grid['second'][0].stdout   # the runner also prints the table
  png = open(os.path.join(exp_dir, 'eval_loss.png'), 'rb').read()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_every_run_has_its_config_and_hparams_with_final_metrics(grid):
  from transformer.monitoring.events import read_events  # pylint: disable=import-outside-toplevel
  for name, lr in zip(grid['names'], [1e-3, 1e-3, 3e-3, 3e-3]):
    run_dir = os.path.join(grid['exp_dir'], name)
    config = json.load(open(os.path.join(run_dir, 'config.json')))
    assert config['run_name'] == name and config['opt']['learning_rate'] == lr
    events = read_events(run_dir)
    assert events['hparams']['opt.learning_rate'] == pytest.approx(lr)
    assert events['hparams']['run_name'] == name
    assert {'eval/loss', 'eval/accuracy'} <= set(events['hparam_metrics'])


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_from_its_checkpoint(tmp_path):
  """SIGTERM to the runner while the run trains: it saves and is 'interrupted'; rerun resumes."""
  path = write(tmp_path / 's.py', TINY_SWEEP.replace(
      "grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [1, 2]})",
      "[{'run_name': 'killed'}]"))
  workdir = str(tmp_path / 'w')
  run_dir = os.path.join(workdir, 'tiny_grid', 'killed')
  log = os.path.join(run_dir, sw.LOG_FILE)
  proc = subprocess.Popen(_sweep_cli(path, workdir), env=dict(os.environ, **SWEEP_ENV),
                          cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while time.monotonic() < deadline and proc.poll() is None:
    if os.path.exists(log) and 'Training ' in open(log, errors='replace').read():
      proc.send_signal(signal.SIGTERM)   # the trainer is in its loop: it saves, then stops
      break
    time.sleep(0.02)
  _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
  assert proc.returncode == 130 and 'run the same command to resume' in stderr, stderr[-3000:]
  assert results.read_status(run_dir)['status'] == 'interrupted'
  reached = sw.finished_step(run_dir)
  assert reached is not None and 1 <= reached < 6, reached
  again = _run_cli(path, workdir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert results.read_status(run_dir)['status'] == 'done' and sw.finished_step(run_dir) == 6
  text = open(log).read()
  assert 'Stopped by SIGTERM' in text and f'from step {reached}' in text
  row, = csv.DictReader(open(os.path.join(workdir, 'tiny_grid', 'results.csv')))
  assert row['status'] == 'done' and int(float(row['steps'])) == 6


@pytest.mark.slow
def test_a_run_failing_at_runtime_is_recorded_and_the_sweep_goes_on(tmp_path):
  text = TINY_SWEEP.replace(
      "grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [1, 2]})",
      "[{'run_name': 'broken', 'data.source': 'text:/nonexistent/*.txt'}, {'run_name': 'fine'}]")
  path = write(tmp_path / 's.py', text)
  proc = _run_cli(path, str(tmp_path / 'w'), '--parallel', '2')
  assert proc.returncode == 1 and '1 run(s) failed: broken' in proc.stderr, proc.stderr[-3000:]
  exp_dir = tmp_path / 'w' / 'tiny_grid'
  broken, fine = (results.read_status(str(exp_dir / n)) for n in ('broken', 'fine'))
  assert broken['status'] == 'failed' and broken['error'].startswith('error:'), broken
  assert fine['status'] == 'done'
  rows = list(csv.DictReader(open(exp_dir / 'results.csv')))
  assert [(r['run'], r['status']) for r in rows] == [('broken', 'failed'), ('fine', 'done')]
  assert rows[0]['error'] == broken['error']


# -- the architecture comparison ----------------------------------------------------------------
def _compare_module():
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      'compare_architectures', os.path.join(REPO, 'experiments', 'compare_architectures.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_compare_architectures_matches_parameter_counts():
  module = _compare_module()
  sweep = sw.Sweep(module.__file__)
  rows = module.model_table(sweep)
  assert {r['family'] for r in rows} == {'encoder', 'decoder', 'encoder_decoder'}
  assert {r['objective'] for r in rows} == {'mlm', 'causal_lm', 'prefix_lm', 'span_corruption',
                                            'seq2seq'}
  assert module.check_matched(rows) <= 0.10
  assert all(r['flops_per_token'] > 0 for r in rows)
  configs = [sweep.load_config(r) for r in sweep.runs]
  lm = [c for c in configs if c.run_name.startswith('lm_')]
  assert {c.data.source for c in lm} == {'python_stdlib/text'}
  assert len({(c.train.steps, c.train.batch_size, c.data.seq_len) for c in lm}) == 1
  with pytest.raises(ConfigError, match='parameter counts differ'):
    module.check_matched(rows + [{**rows[0], 'run': 'big', 'params': 2 * rows[0]['params']}])


@pytest.mark.slow
def test_compare_architectures_runs_with_tiny_steps(tmp_path):
  module = _compare_module()
  argv = ['--workdir', str(tmp_path), '--steps', '3', '--parallel', '2',
          '--config.train.batch_size=4', '--config.data.vocab_size=1024',
          '--config.train.eval_steps=1', '--config.log.samples=0',
          '--config.log.attention_images=false']   # the pictures have their own tests
  assert module.main(argv) == 0
  exp_dir = tmp_path / module.EXPERIMENT
  table = (exp_dir / 'comparison.md').read_text()
  for name in ('lm_encoder_mlm', 'lm_decoder_causal', 'lm_decoder_prefix', 'lm_encdec_span',
               's2s_encdec', 's2s_decoder_prefix'):
    assert (exp_dir / name / 'sweep_status.json').exists()
    assert f'| {name} |' in table
  assert table.count('| done |') == 6
  assert (exp_dir / 'eval_loss.png').exists()


def test_runs_list_their_swept_keys_first_in_tensorboard(tmp_path):
  sweep = sw.Sweep(write(tmp_path / 's.py', TINY_SWEEP))
  argv = sweep.command(sweep.runs[0], str(tmp_path))
  _, child = cli.parse(argv[argv.index('--config'):])
  assert child.log.hparams_first == ('opt.learning_rate', 'model.num_layers')
  mixed = sw.Sweep(write(tmp_path / 'm.py', TINY_SWEEP.replace(
      "grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [1, 2]})",
      "[{'config': 'configs/bert.py:tiny'}, {'config': 'configs/gpt2.py:tiny'}]")))
  assert mixed.load_config(mixed.runs[0]).log.hparams_first == ('model.family',)
