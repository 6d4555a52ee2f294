"""Searches: study() declarations and their one-line errors, the study bookkeeping (counting,
retries, surplus), the worker on a fake trainer (outcomes, two workers on one study, a dead
worker's trial), and a real 6-trial TPE search with the median pruner through the CLI."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import optuna
import pytest

from transformer import cli
from transformer.errors import ConfigError
from transformer import sweep as sweeps_main
from transformer.sweeps import declarations as d
from transformer.sweeps import results, runner, slurm, worker
from transformer.sweeps import search as search_lib
from transformer.sweeps import search_results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPLETE, PRUNED, FAIL, WAITING = (optuna.trial.TrialState.COMPLETE,
                                   optuna.trial.TrialState.PRUNED,
                                   optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING)

SEARCH = """
from transformer.sweeps import study, log_uniform, integer, choice
BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'fake'
OVERRIDES = {'train.steps': 6, 'train.eval_every': 2, 'opt.warmup_steps': 1}
def search():
  return study({'opt.learning_rate': log_uniform(1e-4, 1e-1)}, trials=TRIALS,
               pruner='median', pruner_options={'n_startup_trials': 2})
"""


def write(path, text):
  path.write_text(text)
  return str(path)


def load(path, **kw):
  return search_lib.Search(path, runner.load_module(path, ('search',)), **kw)


# -- declarations -------------------------------------------------------------------------------
def test_distributions_are_optunas_and_still_sample():
  assert d.log_uniform(1e-4, 1e-2).optuna() == optuna.distributions.FloatDistribution(
      1e-4, 1e-2, log=True)
  assert d.integer(2, 8).optuna() == optuna.distributions.IntDistribution(2, 8)
  shapes = d.choice([(1, -1, 1), (2, -1, 1)])
  assert shapes.optuna().choices == ('(1, -1, 1)', '(2, -1, 1)')   # stored as text
  assert shapes.decode('(2, -1, 1)') == (2, -1, 1)
  runs = d.sample(30, 0, {'model.num_layers': d.integer(1, 3), 'opt.b1': d.uniform(0.8, 0.9)})
  assert {r['model.num_layers'] for r in runs} == {1, 2, 3}
  assert all(isinstance(r['model.num_layers'], int) and 0.8 <= r['opt.b1'] <= 0.9 for r in runs)
  assert str(d.integer(1, 3)) == 'integer(1, 3)'


def test_study_defaults_and_directions():
  s = d.study({'opt.learning_rate': d.log_uniform(1e-4, 1e-2)})
  assert (s.metric, s.direction, s.trials, s.sampler, s.pruner) == (
      'eval/loss', 'minimize', 20, 'tpe', 'median')
  assert d.study({'opt.b1': d.uniform(0.8, 0.9)}, metric='eval/accuracy').direction == 'maximize'
  grid = d.study({'model.num_layers': d.integer(1, 3), 'opt.b1': d.choice([0.8, 0.9])},
                 sampler='grid')
  assert grid.trials == 6 and grid.grid() == {'model.num_layers': [1, 2, 3], 'opt.b1': [0.8, 0.9]}


BAD = [
    ("{'opt.learning_rat': log_uniform(1e-4, 1e-2)}", '', 'opt.learning_rat'),
    ("{'opt.learning_rate': log_uniform(1e-2, 1e-4)}", '', 'empty range'),
    ("{'opt.b1': uniform(0.9, 0.9)}", '', 'empty range'),
    ("{'opt.warmup_steps': integer(10, 1)}", '', 'empty range'),
    ("{'opt.learning_rate': log_uniform(0, 1e-2)}", '', 'log range needs bounds > 0'),
    ("{'opt.learning_rate': log_uniform(-1e-3, 1e-2)}", '', 'log range needs bounds > 0'),
    ("{'opt.b1': choice([])}", '', 'empty'),
    ("{'opt.learning_rate': 1e-3}", '', 'not a distribution'),
    ("{'model.num_layers': uniform(1, 4)}", '', 'model.num_layers'),
    ("{'opt.b1': uniform(0.8, 0.9)}", ", metric='eval/los'", "unknown metric 'eval/los'"),
    ("{'opt.b1': uniform(0.8, 0.9)}", ", direction='down'", "direction='down'"),
    ("{'opt.b1': uniform(0.8, 0.9)}", ", sampler='cmaes'", "sampler='cmaes'"),
    ("{'opt.b1': uniform(0.8, 0.9)}", ", pruner='patient'", "pruner='patient'"),
    ("{'opt.b1': uniform(0.8, 0.9)}", ", pruner_options={'n_startup': 2}", 'n_startup'),
    ("{'opt.b1': uniform(0.8, 0.9)}", ", sampler='grid'", 'opt.b1 is continuous'),
    ("{'opt.b1': uniform(0.8, 0.9)}", ', trials=0', 'trials=0'),
    ("{}", '', 'non-empty'),
]


BAD_SEARCH = """
from transformer.sweeps import study, log_uniform, uniform, integer, choice
BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'bad'
def search():
  return study(SPACE EXTRA)
"""


@pytest.mark.parametrize('space,extra,message', BAD, ids=[m for *_, m in BAD])
def test_bad_search_declarations_are_one_line_errors_before_anything_runs(tmp_path, capsys,
                                                                          space, extra, message):
  path = write(tmp_path / 'bad.py', BAD_SEARCH.replace('SPACE', space).replace('EXTRA', extra))
  assert sweeps_main.main([path, '--workdir', str(tmp_path / 'w')]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith('error: ') and message in err, err
  assert not (tmp_path / 'w').exists()   # no study, no run


@pytest.mark.parametrize('flags,text,message', [
    (['--index', '0'], SEARCH, '--index: a search has no fixed runs'),
    ([], SEARCH + 'def sweep():\n  return [{}]\n', 'not both'),
    ([], SEARCH.replace("'opt.warmup_steps': 1", "'opt.warmup_steps': 1, 'train.eval_steps': 0"),
     'train.eval_steps=0'),
    (['--parallel', '0'], SEARCH, '--parallel 0'),
    (['--storage', 'nosuchdb://x'], SEARCH, '--storage nosuchdb://x'),
], ids=['index', 'both', 'no-eval', 'parallel', 'storage'])
def test_bad_search_commands_are_one_line_errors(tmp_path, capsys, flags, text, message):
  path = write(tmp_path / 's.py', text.replace('TRIALS', '2'))
  assert sweeps_main.main([path, '--workdir', str(tmp_path / 'w'), *flags]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err, err


def test_trial_values_reach_the_child_config(tmp_path, monkeypatch):
  monkeypatch.setattr(search_lib.config_lib, 'validate', lambda config: None)
  path = write(tmp_path / 's.py', SEARCH.replace(
      "{'opt.learning_rate': log_uniform(1e-4, 1e-1)}",
      "{'opt.learning_rate': log_uniform(1e-4, 1e-1), 'model.num_layers': integer(1, 4), "
      "'mesh.shape': choice([(1, -1, 1), (-1, 1, 1)])}").replace('TRIALS', '3'))
  search = load(path, extra_overrides={'train.seed': '7'})
  params = {'opt.learning_rate': 3.14159e-3, 'model.num_layers': 3, 'mesh.shape': '(1, -1, 1)'}
  name = search.run_name(4, params)
  assert name == 't4,lr=3.14e-3,layers=3,shape=1--1-1'
  argv = search.command(name, params, str(tmp_path))
  _, child = cli.parse(argv[argv.index('--config'):])
  assert child.opt.learning_rate == 3.14159e-3 and child.model.num_layers == 3
  assert child.mesh.shape == (1, -1, 1) and child.train.seed == 7 and child.train.steps == 6
  assert (child.experiment, child.run_name) == ('fake', name)


def test_a_stored_study_with_another_metric_is_refused(tmp_path):
  path = write(tmp_path / 's.py', SEARCH.replace('TRIALS', '2'))
  load(path).open(str(tmp_path / 'w'))
  other = load(write(tmp_path / 't.py', SEARCH.replace('TRIALS', '2').replace(
      'trials=2,', "trials=2, metric='eval/accuracy',")))
  with pytest.raises(ConfigError, match='optimises eval/loss'):
    other.open(str(tmp_path / 'w'))


def test_slurm_array_tasks_are_workers_of_one_study(tmp_path):
  search = load(write(tmp_path / 's.py', SEARCH.replace('TRIALS', '8')))
  script = slurm.search_slurm_script(search, str(tmp_path / 'w'), tasks=3)
  assert '#SBATCH --array=0-2\n' in script and '--index' not in script
  assert f'--storage sqlite:///{tmp_path}/w/fake/study.db' in script



SEEDED = SEARCH.replace("pruner='median'", "sampler='SAMPLER', seed=SEED, pruner='median'")


def _draws(studies, search, n):
  """The learning rates of `n` trials asked in turn from each of `studies` (workers)."""
  return [[_asked(study, search).params['opt.learning_rate'] for study in studies]
          for _ in range(n)]


@pytest.mark.parametrize('sampler', ['random', 'tpe'])
def test_two_workers_opening_together_draw_different_trials(tmp_path, sampler):
  """Two workers (same task id) open a new study at the same trial count and ask in turn."""
  search = load(write(tmp_path / 's.py', SEEDED.replace('TRIALS', '8').replace(
      'SAMPLER', sampler).replace('SEED', '3')))
  a, b = search.open(str(tmp_path / 'w')), search.open(str(tmp_path / 'w'))
  draws = [lr for pair in _draws((a, b), search, 3) for lr in pair]
  assert len(set(draws)) == 6, draws


@pytest.mark.parametrize('sampler', ['random', 'tpe'])
def test_one_worker_with_a_declared_seed_draws_the_same_trials(tmp_path, sampler):
  def first(seed, where):
    search = load(write(tmp_path / f'{where}.py', SEEDED.replace('TRIALS', '8').replace(
        'SAMPLER', sampler).replace('SEED', str(seed))))
    return [lr for (lr,) in _draws([search.open(str(tmp_path / where))], search, 3)]
  assert first(3, 'one') == first(3, 'two') != first(4, 'three')



def test_a_grid_search_opened_again_visits_each_point_once(tmp_path):
  """A second worker (or a resumed one) opening the grid study after two trials."""
  search = load(write(tmp_path / 's.py', SEARCH.replace('TRIALS', 'None').replace(
      "{'opt.learning_rate': log_uniform(1e-4, 1e-1)}",
      "{'opt.learning_rate': choice([1e-3, 1e-2, 1e-1]), 'model.num_layers': integer(1, 2)}, "
      "sampler='grid', seed=5")))
  points = []
  for _ in range(2):
    study = search.open(str(tmp_path / 'w'))
    for _ in range(3):
      trial = _asked(study, search)
      points.append(tuple(sorted(trial.params.items())))
      study.tell(trial, 1.0)
  assert len(set(points)) == 6, points


# -- counting and retries -----------------------------------------------------------------------
def _asked(study, search, **user_attrs):
  trial = study.ask({k: v.optuna() for k, v in search.study.space.items()})
  for k, v in user_attrs.items():
    trial.set_user_attr(k, v)
  return trial


def test_a_retry_takes_the_place_of_its_trial_and_keeps_its_run(tmp_path):
  search = load(write(tmp_path / 's.py', SEARCH.replace('TRIALS', '2')))
  workdir = str(tmp_path / 'w')
  study = search.open(workdir)
  first = _asked(study, search, run_name='t0,lr=1e-3')
  for step, value in ((2, 5.0), (4, 4.0), (6, 3.0)):
    first.report(value, step)
  os.makedirs(os.path.join(workdir, 'fake', 't0,lr=1e-3', 'checkpoints', '4'))
  study.tell(first, state=FAIL)
  again = search_lib.retry(search, workdir, study, study.trials[0], died=True)
  trials = study.get_trials()
  assert again == 1 and trials[1].state == WAITING
  assert trials[1].params == trials[0].params
  assert trials[1].user_attrs['run_name'] == 't0,lr=1e-3'
  assert trials[1].intermediate_values == {2: 5.0, 4: 4.0}   # up to the run's checkpoint
  assert [t.number for t in search_lib.counted(trials)] == [1]
  assert search_lib.left_to_start(search, trials) == 2       # one new trial + the retry
  popped = study.ask()
  assert popped.number == 1 and popped.params == trials[0].params
  for _ in range(search_lib.MAX_DEATHS - 1):
    study.tell(popped, state=FAIL)
    assert search_lib.retry(search, workdir, study, study.trials[-1], died=True) is not None
    popped = study.ask()
  study.tell(popped, state=FAIL)
  assert search_lib.retry(search, workdir, study, study.trials[-1], died=True) is None


def test_a_trial_asked_beyond_the_budget_is_surplus(tmp_path):
  search = load(write(tmp_path / 's.py', SEARCH.replace('TRIALS', '2')))
  study = search.open(str(tmp_path / 'w'))
  a, b, c = (_asked(study, search) for _ in range(3))   # three racing workers, two trials
  assert [search_lib.is_surplus(search, study, t) for t in (a, b, c)] == [False, False, True]



# -- results --------------------------------------------------------------------------------------
def test_two_results_writers_that_meet_both_end_with_whole_files(tmp_path, monkeypatch):
  """Every worker writes the results when it ends. Two meet: the first one's first os.replace
  waits until the second has written every file."""
  search = load(write(tmp_path / 's.py', SEARCH.replace('TRIALS', '3')))
  workdir, exp_dir = str(tmp_path / 'w'), tmp_path / 'w' / 'fake'
  study = search.open(workdir)
  for value in (3.0, 2.0, 1.0):
    trial = _asked(study, search, run_name=f't{int(value)}')
    trial.report(value, 2)
    study.tell(trial, value)
  real_replace, met = os.replace, []

  def replace(src, dst):
    if not met:
      met.append(dst)
      search_results.write(search, study, workdir)   # the other worker, start to end
    real_replace(src, dst)
  monkeypatch.setattr(os, 'replace', replace)
  search_results.write(search, study, workdir)
  monkeypatch.undo()
  assert met
  with open(exp_dir / 'results.csv') as f:
    assert [r['run'] for r in csv.DictReader(f)] == ['t3', 't2', 't1']
  assert (exp_dir / 'results.md').read_text().startswith('# fake\n')
  pictures = ['eval_loss.png'] + [p for p in search_results.PLOTS if (exp_dir / p).exists()]
  for name in pictures:
    assert (exp_dir / name).read_bytes().startswith(b'\x89PNG'), name
  assert not [n for n in os.listdir(exp_dir) if 'tmp' in n], os.listdir(exp_dir)


# -- the worker on a fake trainer -----------------------------------------------------------------
FAKE_TRAIN = """
import json, os, signal, sys, time, types
from transformer.sweeps import trial as report
from transformer.training.evaluation import EvalResult
run_dir, overrides = sys.argv[1], json.loads(sys.argv[2])
spec, mode = json.loads(os.environ[report.ENV]), os.environ.get('FAKE_MODE', 'ok')
ckpt = os.path.join(run_dir, 'checkpoints')
os.makedirs(ckpt, exist_ok=True)
done = max([int(s) for s in os.listdir(ckpt)], default=0)
with open(os.environ['FAKE_LOG'], 'a') as f:
  f.write(json.dumps([spec['number'], overrides['run_name'], done]) + '\\n')
steps = overrides['train.steps']
reporter = report.TrialHook.from_environment()
reporter.start(types.SimpleNamespace(run=types.SimpleNamespace(steps=steps)))
for step in range(done + 2, steps + 1, 2):
  time.sleep(0.1)
  if mode == 'fail':
    print('error: the fake trainer failed', file=sys.stderr); sys.exit(3)
  why = reporter.after_eval(step, EvalResult(
      {'eval/loss': 10 * overrides['opt.learning_rate'] + 1 / step}, None, None, []))
  os.makedirs(os.path.join(ckpt, str(step)))
  if mode == 'die_once' and not os.path.exists(os.path.join(run_dir, 'died')):
    open(os.path.join(run_dir, 'died'), 'w').close()
    os.kill(os.getpid(), signal.SIGKILL)
  if why:
    print(why); break
"""

DRIVER = """
import json, os, sys, time
from transformer.sweeps import runner, worker
from transformer.sweeps import search as search_lib
path, workdir, fake, ready = sys.argv[1:5]
search_lib.Search.command = lambda self, name, params, wd: [
    sys.executable, fake, os.path.join(wd, self.experiment, name),
    json.dumps(self.overrides(name, params))]
search = search_lib.Search(path, runner.load_module(path, ('search',)))
open(os.path.join(ready, str(os.getpid())), 'w').close()
while len(os.listdir(ready)) < 2:   # both workers start together
  time.sleep(0.05)
outcome = worker.Worker(search, workdir, parallel=2, heartbeat=1, poll_s=0.05).run()
print('OUTCOME', json.dumps(outcome))
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
  """A search of the fake trainer: it reports 10 * lr + 1 / step at steps 2, 4, 6 through the
  real TrialHook, 'saves' a checkpoint directory per step and logs each start to FAKE_LOG."""
  script = write(tmp_path / 'fake_train.py', FAKE_TRAIN)
  log = tmp_path / 'starts.jsonl'
  monkeypatch.setenv('FAKE_LOG', str(log))
  monkeypatch.setenv('PYTHONPATH', REPO)
  monkeypatch.setattr(search_lib.Search, 'command', lambda self, name, params, wd: [
      sys.executable, script, os.path.join(wd, self.experiment, name),
      json.dumps(self.overrides(name, params))])

  def make(trials, space=None, **kw):
    text = SEARCH.replace('TRIALS', str(trials or None))
    if space:
      text = text.replace("{'opt.learning_rate': log_uniform(1e-4, 1e-1)}", space)
    search = load(write(tmp_path / 's.py', text))
    return search, worker.Worker(search, str(tmp_path / 'w'), heartbeat=1, poll_s=0.05,
                                 log=lambda _: None, **kw)
  make.script, make.starts = script, lambda: [json.loads(l) for l in open(log)]
  return make


def test_outcomes_of_a_fake_search_are_told_to_the_study(fake, tmp_path):
  _, w = fake(4, parallel=2)
  outcome = w.run()
  trials = w.study.get_trials()
  assert len(trials) == 4 and {t.state for t in trials} <= {COMPLETE, PRUNED}
  assert outcome == {t.number: 'done' if t.state == COMPLETE else 'pruned' for t in trials}
  for t in trials:
    run_dir = tmp_path / 'w' / 'fake' / t.user_attrs['run_name']
    assert results.read_status(str(run_dir))['status'] == outcome[t.number]
    if t.state == COMPLETE:
      lr = t.params['opt.learning_rate']
      assert t.intermediate_values == pytest.approx({s: 10 * lr + 1 / s for s in (2, 4, 6)})
      assert t.value == pytest.approx(10 * lr + 1 / 6)
    else:
      assert max(t.intermediate_values) == t.system_attrs['pruned_at'] < 6
  assert sorted(n for n, *_ in fake.starts()) == [0, 1, 2, 3]


def test_max_runs_starts_at_most_that_many_trials(fake):
  _, w = fake(4, max_runs=1)
  assert len(w.run()) == 1 and len(w.study.get_trials()) == 1


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_a_grid_search_runs_each_point_once(fake, tmp_path):
  _, w = fake(0, parallel=2, space="{'opt.learning_rate': choice([1e-3, 1e-2]), "
                                    "'model.num_layers': integer(1, 2)}, sampler='grid'")
  outcome = w.run()
  assert len(outcome) == 4 and set(outcome.values()) <= {'done', 'pruned'}
  points = {tuple(sorted(t.params.items())) for t in w.study.get_trials()}
  assert len(points) == 4 and len(w.study.get_trials()) == 4


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_a_failing_trial_is_recorded_and_not_retried(fake, tmp_path, monkeypatch):
  monkeypatch.setenv('FAKE_MODE', 'fail')
  _, w = fake(2)
  assert w.run() == {0: 'failed', 1: 'failed'}
  trials = w.study.get_trials()
  assert [t.state for t in trials] == [FAIL, FAIL]
  assert all(t.system_attrs['error'] == 'error: the fake trainer failed' for t in trials)
  status = results.read_status(str(tmp_path / 'w' / 'fake' / trials[0].user_attrs['run_name']))
  assert status['status'] == 'failed' and status['returncode'] == 3


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_a_killed_trial_resumes_from_its_checkpoint_and_counts_once(fake, monkeypatch):
  monkeypatch.setenv('FAKE_MODE', 'die_once')
  _, w = fake(2, parallel=2)
  outcome = w.run()
  trials = w.study.get_trials()
  counted = search_lib.counted(trials)
  assert len(trials) == 4 and [t.state for t in counted] == [COMPLETE, COMPLETE]
  assert sorted(outcome.values()) == ['done', 'done', 'interrupted', 'interrupted']
  for t in counted:
    first = trials[t.system_attrs['failed_trial']]
    assert first.state == FAIL and t.user_attrs['run_name'] == first.user_attrs['run_name']
    assert t.params == first.params and set(t.intermediate_values) == {2, 4, 6}
  starts = fake.starts()   # [number, run name, the checkpoint step it started from]
  assert sorted(s[2] for s in starts) == [0, 0, 2, 2]
  assert len({s[1] for s in starts}) == 2


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_a_dead_workers_trial_is_failed_by_its_heartbeat_and_resumed(fake, tmp_path):
  search, _ = fake(1)
  workdir = str(tmp_path / 'w')
  dead = search.open(workdir, heartbeat=1)   # a worker that asks, beats, reports, dies
  trial = _asked(dead, search, run_name='t0,orphan')
  dead._storage.record_heartbeat(trial._trial_id)
  trial.report(3.0, 2)
  os.makedirs(os.path.join(workdir, 'fake', 't0,orphan', 'checkpoints', '2'))
  lines = []
  w = worker.Worker(search, workdir, heartbeat=1, poll_s=0.05, log=lines.append)
  assert list(w.run().values()) == ['done']
  assert any(l.startswith('[search] waiting for t0,orphan') for l in lines), lines
  first, retry = w.study.get_trials()
  assert first.state == FAIL and retry.state == COMPLETE
  assert retry.user_attrs['run_name'] == 't0,orphan' and retry.intermediate_values[2] == 3.0
  assert fake.starts() == [[1, 't0,orphan', 2]]


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_two_workers_share_one_study_and_never_run_the_same_trial(fake, tmp_path):
  """Two worker processes (two slots each) on one new SQLite study of 6 trials, started together
  (so they also race to create the database)."""
  driver, ready = write(tmp_path / 'driver.py', DRIVER), tmp_path / 'ready'
  ready.mkdir()
  search, _ = fake(6)
  os.remove(tmp_path / 'w' / 'fake' / search_lib.STUDY_FILE)
  argv = [sys.executable, driver, search.path, str(tmp_path / 'w'), fake.script, str(ready)]
  procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for _ in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  outcomes = [{int(k): v for k, v in json.loads(o.split('OUTCOME ')[1]).items()} for o in outs]
  assert all(outcomes) and not set(outcomes[0]) & set(outcomes[1]), outcomes
  study = search.open(str(tmp_path / 'w'))
  counted = search_lib.counted(study.get_trials())
  assert len(counted) == 6 and {t.state for t in counted} <= {COMPLETE, PRUNED}
  assert sorted(outcomes[0] | outcomes[1]) == sorted(t.number for t in counted)
  starts = fake.starts()
  assert sorted(s[0] for s in starts) == sorted(t.number for t in counted)   # each once
  assert len({s[1] for s in starts}) == 6 and all(s[2] == 0 for s in starts)
  assert len({t.system_attrs['worker'] for t in counted}) == 2


# -- a real search through the CLI ----------------------------------------------------------------
TINY = """
from transformer.sweeps import study, log_uniform, uniform
BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'tiny_search'
OVERRIDES = {'train.steps': 6, 'train.batch_size': 4, 'data.seq_len': 32,
             'data.vocab_size': 1024, 'train.eval_every': 2, 'train.eval_steps': 1,
             'train.log_every': 2, 'checkpoint.every': 2, 'log.samples': 0,
             'log.attention_images': False, 'checkpoint.async_save': False,
             'model.d_model': 32, 'model.d_ff': 64, 'model.num_heads': 2, 'model.num_layers': 1,
             'opt.warmup_steps': 1}
def search():
  return study({'opt.learning_rate': log_uniform(1e-4, 1e-1), 'opt.b1': uniform(0.5, 0.95)},
               metric='eval/loss', trials=TRIALS, sampler='tpe', seed=0,
               pruner='median', pruner_options={'n_startup_trials': 2})
"""
RUN_TIMEOUT_S = 900


@pytest.fixture(scope='module')
def cli_env(tmp_path_factory):
  """Training processes as in tests/e2e/test_resume.py: one compile cache, cheap XLA flags,
  torch hidden (tensorboardX imports it when present, seconds per process)."""
  no_torch = tmp_path_factory.mktemp('no_torch')
  (no_torch / 'torch').mkdir()
  (no_torch / 'torch' / '__init__.py').write_text('raise ImportError("hidden")\n')
  return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(no_torch)]),
              TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='',
              XLA_FLAGS='--xla_backend_optimization_level=0 '
                        '--xla_llvm_disable_expensive_passes=true',
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _cli(path, workdir, *flags):
  return [sys.executable, '-m', 'transformer.sweep', path, '--workdir', workdir, *flags]


def _run(env, path, workdir, *flags):
  return subprocess.run(_cli(path, workdir, *flags), env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=RUN_TIMEOUT_S, check=False)


@pytest.fixture(scope='module')
def tpe(tmp_path_factory, cli_env):
  """6 trials of TPE + the median pruner on the tiny GPT, two at a time; then every status file
  is deleted and the same command runs again (it starts nothing and rewrites the table)."""
  tmp = tmp_path_factory.mktemp('tpe')
  path, workdir = write(tmp / 'search.py', TINY.replace('TRIALS', '6')), str(tmp / 'w')
  first = _run(cli_env, path, workdir, '--parallel', '2')
  table = open(os.path.join(workdir, 'tiny_search', 'results.csv')).read()
  statuses = {p.parent.name: json.loads(p.read_text()) for p in tmp.rglob(results.STATUS_FILE)}
  for status in tmp.rglob(results.STATUS_FILE):
    status.unlink()
  again = _run(cli_env, path, workdir)
  return {'first': first, 'again': again, 'table': table, 'status': statuses,
          'exp_dir': os.path.join(workdir, 'tiny_search'), 'path': path}


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_a_tpe_search_prunes_and_completes_six_trials(tpe):
  proc = tpe['first']
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  study = optuna.load_study(study_name='tiny_search',
                            storage=f'sqlite:///{tpe["exp_dir"]}/study.db')
  trials = study.get_trials()
  assert len(trials) == 6 and {t.state for t in trials} <= {COMPLETE, PRUNED}
  pruned = [t for t in trials if t.state == PRUNED]
  assert pruned and len(pruned) < 6, [(t.number, t.intermediate_values) for t in trials]
  assert proc.stdout.count('[search] start ') == 6
  for t in trials:
    run_dir = os.path.join(tpe['exp_dir'], t.user_attrs['run_name'])
    assert t.user_attrs['run_name'].startswith(f't{t.number},lr=')
    status = tpe['status'][t.user_attrs['run_name']]
    steps = sorted(int(s) for s in os.listdir(os.path.join(run_dir, 'checkpoints')))
    if t.state == PRUNED:   # stopped cleanly: a final checkpoint at the step it was pruned
      assert steps[-1] == t.system_attrs['pruned_at'] < 6 and status['status'] == 'pruned'
      assert 'Pruned by the search at step' in open(os.path.join(run_dir, 'train.log')).read()
    else:
      assert steps[-1] == 6 and set(t.intermediate_values) == {2, 4, 6}
      assert status['status'] == 'done'


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_the_trials_are_in_the_hparams_dashboard_with_metric_and_state(tpe):
  from transformer.monitoring.events import read_events  # pylint: disable=import-outside-toplevel
  rows = list(csv.DictReader(open(os.path.join(tpe['exp_dir'], 'results.csv'))))
  for row in rows:
    events = read_events(os.path.join(tpe['exp_dir'], row['run']))
    assert events['hparams']['search.trial'] == int(row['trial'])
    assert events['hparams']['opt.learning_rate'] == pytest.approx(
        float(row['opt.learning_rate']))
    assert {'eval/loss', 'search/pruned'} <= set(events['hparam_metrics'])
    [(_, pruned)] = events['scalars']['search/pruned']
    assert pruned == float(row['status'] == 'pruned')


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_results_best_command_and_optunas_plots(tpe):
  out = tpe['first'].stdout
  assert '| t0,lr=' in out and 'Best: trial ' in out
  command = out.split('Train its config again with:\n\n  ')[1].splitlines()[0]
  _, config = cli.parse(shlex.split(command)[3:])
  study = optuna.load_study(study_name='tiny_search',
                            storage=f'sqlite:///{tpe["exp_dir"]}/study.db')
  assert config.opt.learning_rate == study.best_params['opt.learning_rate']
  assert config.experiment == 'tiny_search_best' and config.train.steps == 6
  for name in ('optimization_history.png', 'param_importances.png', 'intermediate_values.png',
               'eval_loss.png'):
    png = open(os.path.join(tpe['exp_dir'], name), 'rb').read()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000, name


@pytest.mark.slow   # a real search / sweep of training runs (the default run keeps the fast ones)
def test_the_study_file_is_the_state_of_record(tpe):
  again = tpe['again']
  assert again.returncode == 0 and '6 of 6 trials' in again.stdout, again.stderr[-3000:]
  assert '[search] start' not in again.stdout   # nothing ran twice
  with open(os.path.join(tpe['exp_dir'], 'results.csv')) as f:
    assert f.read() == tpe['table']   # status files gone: the table comes from study.db


def _at_first_eval(proc, exp_dir, act):
  """Call `act` once trial 0 of the search `proc` has evaluated; returns its train.log."""
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while time.monotonic() < deadline and proc.poll() is None:
    logs = list(exp_dir.glob('t0,*/train.log'))
    if logs and 'step 2: eval' in logs[0].read_text(errors='replace'):
      act()
      return logs[0]
    time.sleep(0.05)
  raise AssertionError(f'trial 0 never evaluated: {proc.communicate()}')


@pytest.mark.slow
def test_an_interrupted_search_resumes_its_trial_and_counts_it_once(tmp_path, cli_env):
  """SIGTERM to the search while its first trial trains: the trial saves and is queued again;
  the same command resumes it from its checkpoint and finishes the study."""
  path = write(tmp_path / 's.py', TINY.replace('TRIALS', '2').replace("'train.steps': 6",
                                                                      "'train.steps': 40"))
  workdir = str(tmp_path / 'w')
  proc = subprocess.Popen(_cli(path, workdir), env=cli_env, cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  exp_dir = tmp_path / 'w' / 'tiny_search'
  log = _at_first_eval(proc, exp_dir, lambda: proc.send_signal(signal.SIGTERM))
  out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
  assert proc.returncode == 130 and 'run the same command to resume' in err, out + err
  assert 'interrupted' in out and 'queued again as trial 1' in out, out
  reached = runner.finished_step(str(log.parent))
  assert reached is not None and 2 <= reached < 40
  again = _run(cli_env, path, workdir)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  study = optuna.load_study(study_name='tiny_search', storage=f'sqlite:///{exp_dir}/study.db')
  first, *rest = study.get_trials()
  counted = search_lib.counted(study.get_trials())
  assert first.state == FAIL and len(counted) == 2 and first not in counted
  assert counted[0].user_attrs['run_name'] == first.user_attrs['run_name']
  assert f'Resumed {log.parent} from step {reached}' in log.read_text()
  assert len(rest) == 2


@pytest.mark.slow
def test_a_killed_worker_leaves_its_trial_to_the_next_one(tmp_path, cli_env):
  """SIGKILL to the worker: its training process is told to stop (it saves); the trial is
  RUNNING with a stale heartbeat until the next run of the command fails it and resumes it."""
  path = write(tmp_path / 's.py', TINY.replace('TRIALS', '1').replace("'train.steps': 6",
                                                                      "'train.steps': 40"))
  workdir = str(tmp_path / 'w')
  proc = subprocess.Popen(_cli(path, workdir, '--heartbeat', '1'), env=cli_env, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  exp_dir = tmp_path / 'w' / 'tiny_search'
  log = _at_first_eval(proc, exp_dir, proc.kill)
  proc.wait()
  deadline = time.monotonic() + 120   # the orphaned trainer saves and exits on its own
  while 'Stopped by SIGTERM' not in log.read_text() and time.monotonic() < deadline:
    time.sleep(0.2)
  assert 'Stopped by SIGTERM' in log.read_text()
  reached = runner.finished_step(str(log.parent))
  again = _run(cli_env, path, workdir, '--heartbeat', '1')
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  study = optuna.load_study(study_name='tiny_search', storage=f'sqlite:///{exp_dir}/study.db')
  first, retry = study.get_trials()
  assert first.state == FAIL and retry.state == COMPLETE
  assert f'from step {reached}' in log.read_text()
