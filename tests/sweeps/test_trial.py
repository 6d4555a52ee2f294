"""The search trial's hook of the training loop: a run started as a trial reports its metric at each eval
and stops cleanly (final checkpoint, `search/pruned`) when the study's pruner says so."""

import json
import os
import types

import optuna
import pytest

from transformer import config as config_lib
from transformer.errors import ConfigError, TrainingError
from transformer.monitoring.events import read_events
from transformer.sweeps import trial as report
from transformer.sweeps.trial import TrialHook
from transformer.training import hooks, loop
from transformer.training.evaluation import EvalResult


class Points:
  """Each eval's scalars as the hooks after the trial's see them (TensorBoard writes these)."""

  def __init__(self, hook):
    self.hook, self.points = hook, []

  def after_eval(self, step, scalars):
    result = EvalResult(dict(scalars), None, None, [])
    why = self.hook.after_eval(step, result)
    extra = {k: v for k, v in result.scalars.items() if k not in scalars}
    if extra:
      self.points.append((step, extra))
    return why


def _started(spec, steps):
  hook = TrialHook(spec)
  hook.start(hooks.Session(run=types.SimpleNamespace(steps=steps), step=0, compile_s=0.0,
                           counts={}, peak=1.0, peak_name='-'))
  return Points(hook)


def _study(tmp_path, pruner=None):
  url = f'sqlite:///{tmp_path}/study.db'
  study = optuna.create_study(storage=url, study_name='s', pruner=pruner)
  trial = study.ask()
  return url, study, trial


def _spec(url, trial, pruner, metric='eval/loss'):
  return {'storage': url, 'study': 's', 'trial_id': trial._trial_id, 'number': trial.number,
          'metric': metric, 'pruner': pruner}


def test_without_the_environment_variable_the_reporter_does_nothing():
  hook = TrialHook.from_environment(env={})
  assert not hook.active and hook.hparams == {} and hook.metrics == {}
  assert _started(None, 10).after_eval(2, {'eval/loss': 1.0}) is None


def test_a_bad_trial_description_is_a_config_error():
  with pytest.raises(ConfigError, match=report.ENV):
    TrialHook.from_environment(env={report.ENV: '{"storage": "sqlite://"}'})


def test_reports_each_eval_and_finishes_with_search_pruned_0(tmp_path):
  url, study, trial = _study(tmp_path)
  spec = _spec(url, trial, {'class': 'NopPruner', 'options': {}})
  hook = TrialHook.from_environment(env={report.ENV: json.dumps(spec)})
  assert hook.hparams == {'search.study': 's', 'search.trial': 0}
  assert set(hook.metrics) == {'eval/loss', 'search/pruned'}
  reporter = writer = _started(spec, 4)
  assert reporter.after_eval(2, {'eval/loss': 3.0, 'train/loss': 9.0}) is None
  assert reporter.after_eval(4, {'eval/loss': 2.5}) is None
  assert study.trials[0].intermediate_values == {2: 3.0, 4: 2.5}
  assert writer.points == [(4, {'search/pruned': 0.0})]


def test_the_pruner_stops_the_run_and_marks_the_trial(tmp_path):
  url, study, trial = _study(tmp_path)
  reporter = writer = _started(_spec(url, trial, {'class': 'ThresholdPruner',
                                                  'options': {'upper': 2.0}}), 10)
  assert reporter.after_eval(2, {'eval/loss': 1.5}) is None
  why = reporter.after_eval(4, {'eval/loss': 2.5})
  assert why.startswith('Pruned by the search at step 4')
  assert study.trials[0].system_attrs['pruned_at'] == 4
  assert writer.points == [(4, {'search/pruned': 1.0})]


def test_a_trial_finished_elsewhere_stops_the_run(tmp_path):
  url, study, trial = _study(tmp_path)
  reporter = _started(_spec(url, trial, {'class': 'NopPruner'}), 10)
  study.tell(trial, state=optuna.trial.TrialState.FAIL)   # e.g. its worker was found dead
  assert 'the search already finished trial 0' in reporter.after_eval(2, {'eval/loss': 1.0})


def test_a_metric_the_run_does_not_log_is_a_training_error(tmp_path):
  url, _, trial = _study(tmp_path)
  reporter = _started(_spec(url, trial, {'class': 'NopPruner'}, metric='eval/bleu'), 10)
  with pytest.raises(TrainingError, match="optimises 'eval/bleu'"):
    reporter.after_eval(2, {'eval/loss': 1.0})


def test_a_pruned_trial_saves_a_final_checkpoint_and_logs_its_state(tmp_path, monkeypatch,
                                                                     capsys):
  """The real loop: pruned at its first eval (step 2 of 6), it saves step 2 and stops."""
  url, study, trial = _study(tmp_path)
  spec = _spec(url, trial, {'class': 'ThresholdPruner', 'options': {'upper': 0.0}})
  monkeypatch.setenv(report.ENV, json.dumps(spec))
  config = config_lib.load('configs/gpt2.py:tiny', {
      'train.steps': 6, 'train.batch_size': 4, 'data.seq_len': 32, 'data.vocab_size': 1024,
      'train.eval_every': 2, 'train.eval_steps': 1, 'train.log_every': 3,
      'checkpoint.every': 5, 'checkpoint.async_save': False, 'log.samples': 0,
      'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64,
      'opt.warmup_steps': 1, 'run_name': 'trial'})
  loop.train(config, str(tmp_path), hooks=[TrialHook.from_environment(), *hooks.standard()])
  assert 'Pruned by the search at step 2' in capsys.readouterr().out
  run_dir = tmp_path / 'default' / 'trial'
  assert sorted(os.listdir(run_dir / 'checkpoints')) == ['2']   # step 2 was not a save step
  assert study.trials[0].intermediate_values.keys() == {2}
  assert study.trials[0].system_attrs['pruned_at'] == 2
  events = read_events(run_dir)
  assert events['scalars']['search/pruned'] == [(2, 1.0)]
  assert events['hparams']['search.trial'] == 0 and events['hparams']['search.study'] == 's'
  assert {'eval/loss', 'search/pruned'} <= set(events['hparam_metrics'])
