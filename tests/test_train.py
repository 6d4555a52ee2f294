"""The main job end to end on the embedded corpus: every objective trains, and the loss falls."""

import numpy as np
import pytest

from transformer import config as config_lib
from transformer import logging as tb
from transformer import train

# Small but real: the embedded corpus, a 1024-piece tokenizer, tiny models. Text samples and
# attention pictures are covered by tests/test_tensorboard_tags.py; they are off here for speed.
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


@pytest.mark.parametrize('name', list(RUNS))
def test_objective_trains_on_embedded_corpus(name, tmp_path):
  spec, overrides, steps, fraction = RUNS[name]
  config = load(spec, steps, **overrides)
  final = train.train(config, str(tmp_path))
  events = tb.read_events(train.run_dir(config, str(tmp_path)))
  losses = [v for _, v in events['scalars']['train/loss']]
  start = np.log(config.model.vocab_size)
  assert np.isfinite(losses).all()
  assert losses[-1] < fraction * start, (start, losses)
  assert final['eval/loss'] < fraction * start, (start, final['eval/loss'])
  assert losses[-1] < losses[0]


def test_resume_after_completion_exits_without_work(tmp_path, capsys):
  config = load('configs/gpt2.py:tiny', 10)
  train.train(config, str(tmp_path))
  assert train.train(load('configs/gpt2.py:tiny', 10), str(tmp_path)) == {}
  assert 'already reached step 10' in capsys.readouterr().out


def test_dry_run_reports_without_training(tmp_path, capsys):
  out = train.train(load('configs/bert.py:tiny', 10), str(tmp_path), dry_run=True)
  text = capsys.readouterr().out
  assert out['flops_per_token'] > 0
  assert 'FLOPs per step' in text and 'Compiled memory per device' in text
  assert not (tmp_path / 'default' / 'bert_tiny' / 'checkpoints').exists() or not any(
      (tmp_path / 'default' / 'bert_tiny' / 'checkpoints').iterdir())
