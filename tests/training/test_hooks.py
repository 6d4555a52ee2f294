"""The loop's hooks, each driven by hand (no training run): the container's order and stop
line, TensorBoard's events, the console's lines, the profiler's trace."""

import types

import jax.numpy as jnp

from transformer import config as config_lib
from transformer.monitoring import profiler
from transformer.monitoring.events import read_events
from transformer.training import hooks
from transformer.training.evaluation import EvalResult


def _session(tmp_path, **overrides):
  config = config_lib.load('configs/gpt2.py:tiny', {'log.samples': 0,
                                                     'log.attention_images': False,
                                                     'log.attention_stats': False, **overrides})
  run = types.SimpleNamespace(config=config, dir=str(tmp_path / 'run'), steps=10,
                              checkpoint_dir=str(tmp_path / 'run' / 'checkpoints'),
                              objective=types.SimpleNamespace(corpus_metrics=()))
  return hooks.Session(run=run, step=0, compile_s=1.5, counts={'total': 7, 'non_embedding': 3},
                       peak=1e12, peak_name='a test peak')


class Recorder(hooks.Hook):
  def __init__(self, name, calls, why=None):
    self.name, self.calls, self.why = name, calls, why
    self.hparams = {f'{name}.column': 1}

  def start(self, session):
    self.calls.append((self.name, 'start', sorted(session.extra('hparams'))))

  def after_step(self, step, outputs, live):
    self.calls.append((self.name, 'after_step', step))

  def after_eval(self, step, result):
    self.calls.append((self.name, 'after_eval', step))
    return self.why


def test_hooks_run_in_order_and_the_first_stop_line_wins(tmp_path):
  calls = []
  chain = hooks.Hooks([Recorder('a', calls), Recorder('b', calls, 'stop b'),
                       Recorder('c', calls, 'stop c')])
  chain.start(_session(tmp_path))
  chain.after_step(3, None, None)
  chain.before_step(4)   # a point no recorder overrides: the base class's no-op
  assert chain.after_eval(4, EvalResult({}, None, None, [])) == 'stop b'
  assert calls == [(n, 'start', ['a.column', 'b.column', 'c.column']) for n in 'abc'] + [
      (n, 'after_step', 3) for n in 'abc'] + [(n, 'after_eval', 4) for n in 'abc']


def test_tensorboard_writes_the_tag_contract_and_the_final_hparams(tmp_path):
  session = _session(tmp_path)
  session.hooks = [types.SimpleNamespace(hparams={'search.trial': 3}, metrics={'m/x': None})]
  tb = hooks.TensorBoard()
  tb.start(session)
  tb.after_log(2, {'train/loss': 4.0, 'perf/tokens_per_sec': 10.0})
  tb.after_eval(2, EvalResult({'eval/loss': 3.5, 'eval/accuracy': 0.25}, None, None, []))
  tb.before_save(2)
  tb.finish({'eval/loss': 3.5, 'train/loss': 4.0}, None)
  events = read_events(session.run.dir)
  assert events['scalars']['train/loss'] == [(2, 4.0)]
  assert events['scalars']['eval/loss'] == [(2, 3.5)]
  assert events['scalars']['params/total'] == [(0, 7.0)]
  assert events['scalars']['perf/compile_seconds'] == [(0, 1.5)]
  assert events['hparams']['search.trial'] == 3 and events['hparams']['model.num_layers'] == 2
  assert {'eval/loss', 'eval/accuracy', 'm/x'} <= set(events['hparam_metrics'])


def test_console_prints_the_start_eval_and_stop_lines(tmp_path, capsys):
  session = _session(tmp_path)
  console = hooks.Console()
  console.start(session)
  console.after_step(1, None, {'loss': 5.0, 'tokens_per_sec': None})
  console.after_eval(2, EvalResult({'eval/loss': 3.25}, None, None, []))
  console.finish({}, 'Stopped by SIGTERM at step 2; saved.')
  out = capsys.readouterr().out
  assert f'Training {session.run.dir}: 10 steps (train step compiled in 1.5s)' in out
  assert 'step 2: eval/loss 3.2500' in out
  assert out.rstrip().endswith('Stopped by SIGTERM at step 2; saved.')
  console = hooks.Console()
  console.start(session)
  console.finish({'eval/loss': 3.0, 'train/loss': 9.0}, None)
  assert 'Finished 10 steps (eval/loss 3.0000).' in capsys.readouterr().out


def test_profiler_traces_the_named_steps_only(tmp_path):
  session = _session(tmp_path, **{'log.profile_steps': '2,1'})
  hook = hooks.Profiler()
  hook.start(session)
  for step in (1, 2, 3):
    hook.before_step(step)
    assert hook.trace.active == (step == 2)
    hook.after_step(step, jnp.ones(3) * step, None)
  hook.finish({}, None)
  assert len(profiler.trace_files(session.run.dir)) == 1
