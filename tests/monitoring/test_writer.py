"""MetricWriter: the tag contract, hparams, text and images round-trip through TensorBoard's reader."""

import io
import math
import os

import ml_collections
import numpy as np
import pytest

from transformer.monitoring import writer as tlog
from transformer.monitoring.events import read_events
from transformer.monitoring.attention import render as render_attention
from transformer.monitoring import progress


def _event_files(root):
  return [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if 'tfevents' in f]


def test_stdlib_logging_is_not_shadowed():
  # transformer/logging.py does `import logging`; it must get the standard library.
  assert tlog.log.__class__.__module__ == 'logging'


def test_contract_tags_hparams_text_image_in_one_run_dir(tmp_path):
  run = tmp_path / 'exp' / 'run1'
  config = ml_collections.ConfigDict({
      'model': {'num_layers': 2, 'd_model': 64, 'dtype': 'float32', 'tie_embeddings': True},
      'mesh': {'shape': (-1, 1, 1)}, 'opt': {'learning_rate': 3e-3}, 'objective': 'causal_lm'})
  hp = tlog.flatten_config(config)
  assert hp == {'model.num_layers': 2, 'model.d_model': 64, 'model.dtype': 'float32',
                'model.tie_embeddings': True, 'mesh.shape': '(-1, 1, 1)',
                'opt.learning_rate': 3e-3, 'objective': 'causal_lm'}

  w = tlog.MetricWriter(run)
  w.hparams(hp, {'eval/loss': None, 'eval/accuracy': None})   # placeholders at the start
  expected = {}
  for step in (10, 20):
    values = {tag: float(i + step) / 7 for i, tag in enumerate(tlog.TAGS)}
    w.scalars(step, values)
    for tag, v in values.items():
      expected.setdefault(tag, []).append((step, v))
  w.text(20, 'samples/0', '**input:** hello\n\n**prediction:** world')
  w.image(20, 'images/gray', np.linspace(0, 1, 12).reshape(3, 4))
  attn = np.random.default_rng(0).dirichlet(np.ones(5), size=(3, 6))   # [heads=3, Lq=6, Lk=5]
  w.attention_images(20, 'attention/layer0', attn, labels_q=list('abcdef'), labels_k=list('vwxyz'))
  w.hparams(hp, {'eval/loss': 1.5, 'eval/accuracy': 0.25, 'eval/bleu': 12.0})   # final metrics
  w.close()

  # Everything lives in the run directory itself: no timestamped sub-run for the hparams.
  files = _event_files(tmp_path)
  assert files and all(os.path.dirname(f) == str(run) for f in files)

  ev = read_events(run)
  for tag in tlog.TAGS:
    got = ev['scalars'][tag]
    assert [s for s, _ in got] == [10, 20]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expected[tag]], rtol=1e-6)
  # Final metrics already logged as scalars are not duplicated; new ones are added.
  assert len(ev['scalars']['eval/loss']) == 2
  assert ev['scalars']['eval/bleu'] == [(20, 12.0)]
  assert ev['hparams']['model.num_layers'] == 2.0
  assert ev['hparams']['model.dtype'] == 'float32'
  assert ev['hparams']['model.tie_embeddings'] is True
  assert ev['hparams']['mesh.shape'] == '(-1, 1, 1)'
  assert set(ev['hparam_metrics']) >= {'eval/loss', 'eval/accuracy'}
  assert ev['text']['samples/0'][0][0] == 20
  assert 'prediction' in ev['text']['samples/0'][0][1]
  assert ev['images']['images/gray'] == [(20, 3, 4)]
  (step, height, width), = ev['images']['attention/layer0']
  assert step == 20 and width > 2 * height   # three heads side by side


def test_attention_render_is_an_rgb_picture():
  attn = np.full((2, 4, 4), 0.25)
  img = render_attention(attn)
  assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3
  assert img.shape[1] > img.shape[0]
  assert img.std() > 0   # not blank


def test_image_rejects_bad_shape(tmp_path):
  w = tlog.MetricWriter(tmp_path)
  with pytest.raises(ValueError, match='HxW'):
    w.image(0, 'x', np.zeros((2, 3, 5)))
  w.close()


def test_disabled_writer_writes_nothing(tmp_path):
  run = tmp_path / 'run'
  w = tlog.MetricWriter(run, enabled=False)
  w.scalars(1, {'train/loss': 1.0})
  w.hparams({'a': 1}, {'eval/loss': 1.0})
  w.text(1, 't', 'x')
  w.image(1, 'i', np.zeros((2, 2)))
  w.attention_images(1, 'a', np.ones((1, 2, 2)))
  w.flush()
  w.close()
  assert not run.exists() and list(tmp_path.iterdir()) == []


class _Stream(io.StringIO):

  def __init__(self, tty):
    super().__init__()
    self._tty = tty

  def isatty(self):
    return self._tty


def test_progress_plain_lines_every_tenth():
  out = _Stream(tty=False)
  bar = progress.ProgressBar(100, initial_step=0, stream=out, min_interval_s=1e9)
  for step in range(1, 101):
    bar.update(step, loss=2.0 - step / 100, tokens_per_sec=1234.5)
  bar.close()
  lines = out.getvalue().splitlines()
  assert 10 <= len(lines) <= 12
  assert '\r' not in out.getvalue()
  assert lines[-1].startswith('step 100/100') and 'loss 1.0000' in lines[-1]
  assert 'tok/s' in lines[0] and 'ETA' in lines[0]


def test_progress_tty_one_refreshed_line_and_disabled():
  out = _Stream(tty=True)
  bar = progress.ProgressBar(50, initial_step=10, stream=out)
  for step in range(11, 51):
    bar.update(step, loss=math.nan)
  bar.close()
  text = out.getvalue()
  assert text.count('\n') == 1 and text.count('\r') >= 1 and '50/50' in text
  quiet = _Stream(tty=True)
  bar = progress.ProgressBar(5, stream=quiet, enabled=False)
  bar.update(5, loss=1.0)
  bar.close()
  assert quiet.getvalue() == ''
