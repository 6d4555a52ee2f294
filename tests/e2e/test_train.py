"""The main job end to end on the embedded corpus: every objective trains, and the loss falls."""

import os
import signal

import jax
import numpy as np
import pytest

from transformer.training import checkpoint
from transformer import config as config_lib
from transformer.monitoring.events import read_events
from transformer.training import loop, setup
from transformer.errors import TrainingError
from transformer.training.trainer import Trainer

# Small but real: the embedded corpus, a 1024-piece tokenizer, tiny models. Text samples and
# attention pictures are covered by tests/e2e/test_tensorboard_tags.py; they are off here for speed.
SMALL = {'train.batch_size': 8, 'data.seq_len': 64, 'data.vocab_size': 1024,
         'train.log_every': 10, 'train.eval_steps': 2, 'checkpoint.async_save': False,
         'log.samples': 0, 'log.attention_images': False, 'opt.warmup_steps': 10}

# (config, overrides, steps, the final train and eval loss must be below this fraction of
# ln(vocab), the loss of a uniform prediction, which is where every model starts)
RUNS = {
    'causal_lm': ('configs/gpt2.py:tiny', {}, 60, 0.8),
    'prefix_lm': ('configs/gpt2.py:tiny', {'objective': 'prefix_lm'}, 60, 0.8),
    'mlm': ('configs/bert.py:tiny', {}, 60, 0.9),
    'span_corruption': ('configs/t5.py:tiny', {'data.targets_len': 24}, 60, 0.8),
    'seq2seq': ('configs/transformer.py:tiny', {'data.source': 'python_stdlib/docstrings',
                                                 'data.targets_len': 24,
                                                 'opt.learning_rate': 3e-3}, 60, 0.8),
    'seq2seq_decoder': ('configs/gpt2.py:tiny', {'objective': 'seq2seq',
                                                 'data.source': 'python_stdlib/docstrings'}, 60,
                        0.8),
}


def load(spec, steps, **overrides):
  values = {**SMALL, 'train.steps': steps, 'train.eval_every': steps, 'checkpoint.every': steps,
            **overrides}
  return config_lib.load(spec, {k: v if isinstance(v, str) else str(v) for k, v in values.items()})


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'seq2seq' else n
                                  for n in RUNS])   # seq2seq also trains in test_generation.py
def test_objective_trains_on_embedded_corpus(name, tmp_path):
  spec, overrides, steps, fraction = RUNS[name]
  config = load(spec, steps, **overrides)
  final = loop.train(config, str(tmp_path))
  events = read_events(setup.run_dir(config, str(tmp_path)))
  losses = [v for _, v in events['scalars']['train/loss']]
  start = np.log(config.model.vocab_size)
  assert np.isfinite(losses).all()
  assert losses[-1] < fraction * start, (start, losses)
  assert final['eval/loss'] < fraction * start, (start, final['eval/loss'])
  assert losses[-1] < losses[0]


def test_resume_after_completion_exits_without_work(tmp_path, capsys):
  config = load('configs/gpt2.py:tiny', 10)
  loop.train(config, str(tmp_path))
  assert loop.train(load('configs/gpt2.py:tiny', 10), str(tmp_path)) == {}
  assert 'already reached step 10' in capsys.readouterr().out


def test_dry_run_reports_without_training(tmp_path, capsys):
  out = loop.train(load('configs/bert.py:tiny', 10), str(tmp_path), dry_run=True)
  text = capsys.readouterr().out
  assert out['flops_per_token'] > 0
  assert 'FLOPs per step' in text and 'Compiled memory per device' in text
  assert not (tmp_path / 'default' / 'bert_tiny' / 'checkpoints').exists() or not any(
      (tmp_path / 'default' / 'bert_tiny' / 'checkpoints').iterdir())


# --- the loop's bookkeeping: what gets evaluated, recorded and saved ---------------------------

ONE_LAYER = {'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64,
             'data.seq_len': 32, 'train.batch_size': 4, 'train.eval_steps': 1}


def test_eval_steps_zero_means_no_eval(tmp_path):
  config = load('configs/gpt2.py:tiny', 4, **{**ONE_LAYER, 'train.eval_steps': 0,
                                              'train.eval_every': 2, 'train.log_every': 2,
                                              'checkpoint.every': 2})
  final = loop.train(config, str(tmp_path))
  assert final and not any(k.startswith('eval/') for k in final), final
  scalars = read_events(setup.run_dir(config, str(tmp_path)))['scalars']
  assert [s for s, _ in scalars['train/loss']] == [2, 4]
  assert not any(tag.startswith('eval/') for tag in scalars), sorted(scalars)


def test_keep_best_records_eval_loss_only_with_steps_that_ran_an_eval(tmp_path):
  """Checkpoints at 2, 4, 6, 8, evals at 4 and 8: step 6 must not carry step 4's eval loss."""
  config = load('configs/gpt2.py:tiny', 8, **{**ONE_LAYER, 'train.eval_every': 4,
                                              'train.log_every': 4, 'checkpoint.every': 2,
                                              'checkpoint.keep': 4, 'checkpoint.keep_best': True})
  loop.train(config, str(tmp_path))
  out = setup.run_dir(config, str(tmp_path))
  evals = dict(read_events(out)['scalars']['eval/loss'])
  assert sorted(evals) == [4, 8]
  ckpt = checkpoint.Checkpointer(os.path.join(out, 'checkpoints'), every=2, keep=4)
  try:
    assert ckpt.all_steps() == [2, 4, 6, 8]
    recorded = {s: ckpt.metrics(s).get('eval/loss') for s in ckpt.all_steps()}
  finally:
    ckpt.close()
  assert recorded == {2: None, 4: pytest.approx(evals[4]), 6: None, 8: pytest.approx(evals[8])}


def _poison(monkeypatch, bad_step, signal_at_bad_step=False):
  """The train step that produces `bad_step` returns all-NaN parameters and a NaN loss (and,
  with `signal_at_bad_step`, a SIGTERM arrives while it runs): a divergence at a known step."""
  compile_step = Trainer.compile

  def compile_poisoned(self, state, batch):
    step_fn = compile_step(self, state, batch)

    def poisoned(state, batch):
      new, metrics = step_fn(state, batch)
      if int(new['step']) == bad_step:
        if signal_at_bad_step:
          os.kill(os.getpid(), signal.SIGTERM)
        new = {**new, 'params': jax.tree.map(lambda x: x * np.nan, new['params'])}
        metrics = {**metrics, 'loss': (metrics['loss'][0] * np.nan, metrics['loss'][1])}
      return new, metrics
    return poisoned
  monkeypatch.setattr(Trainer, 'compile', compile_poisoned)


def _saved_steps(config, workdir):
  """{step: True if every saved parameter is finite} of the run's checkpoints."""
  ckpt = checkpoint.Checkpointer(os.path.join(setup.run_dir(config, workdir), 'checkpoints'),
                                 every=1, keep=10)
  try:
    return {s: all(np.isfinite(x).all() for x in jax.tree.leaves(
        jax.device_get(ckpt.restore(None, step=s)[1]['params']))) for s in ckpt.all_steps()}
  finally:
    ckpt.close()


@pytest.mark.parametrize('case', ['save_step_between_log_steps', pytest.param(
    'sigterm_at_the_bad_step', marks=pytest.mark.slow)])
def test_a_non_finite_step_is_never_saved(case, tmp_path, monkeypatch):
  """The loss becomes NaN at step 4, a checkpoint step but no log step (or SIGTERM asks for a
  save at it): no checkpoint holds step 4, the error says so, and the same command resumes from
  the last finite checkpoint."""
  overrides = {**ONE_LAYER, 'train.log_every': 5, 'train.eval_every': 10,
               'checkpoint.every': 2 if case == 'save_step_between_log_steps' else 3}
  config = load('configs/gpt2.py:tiny', 10, **overrides)
  _poison(monkeypatch, bad_step=4, signal_at_bad_step=case == 'sigterm_at_the_bad_step')
  with pytest.raises(TrainingError, match='at step 4') as e:
    loop.train(config, str(tmp_path))
  saved = _saved_steps(config, str(tmp_path))
  assert saved == ({2: True} if case == 'save_step_between_log_steps' else {3: True}), saved
  assert 'no checkpoint holds this step or a later one' in str(e.value)
  monkeypatch.undo()   # the recovery: run the same command again
  loop.train(load('configs/gpt2.py:tiny', 10, **overrides), str(tmp_path))
  saved = _saved_steps(config, str(tmp_path))
  assert max(saved) == 10 and all(saved.values()), saved


def test_steps_per_sec_counts_the_steps_of_its_window(tmp_path):
  """5 steps logged every 2: the last window (step 5) has one step, not log_every."""
  config = load('configs/gpt2.py:tiny', 5, **{**ONE_LAYER, 'train.log_every': 2,
                                              'train.eval_every': 5, 'checkpoint.every': 5})
  loop.train(config, str(tmp_path))
  scalars = {tag: dict(points) for tag, points in
             read_events(setup.run_dir(config, str(tmp_path)))['scalars'].items()}
  seen, tps, sps = (scalars[t] for t in ('train/tokens_seen', 'perf/tokens_per_sec',
                                         'perf/steps_per_sec'))
  assert sorted(seen) == [2, 4, 5]
  for previous, step in [(0, 2), (2, 4), (4, 5)]:   # tokens/s / steps/s = tokens per step
    per_step = (seen[step] - seen.get(previous, 0)) / (step - previous)
    assert tps[step] / sps[step] == pytest.approx(per_step, rel=1e-4), step
