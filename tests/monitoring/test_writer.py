"""MetricWriter: the tag contract, hparams, text and images round-trip through TensorBoard's reader."""

import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from transformer.monitoring import writer as tlog
from transformer.monitoring.events import read_events
from transformer.monitoring.attention_plot import render as render_attention


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
  w.attention_images(20, 'layer0', attn, labels_q=list('abcdef'), labels_k=list('vwxyz'))
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
  for h in range(3):   # one picture per head, each at least 256 px a side
    (step, height, width), = ev['images'][f'attention_maps/layer0/head{h}']
    assert step == 20 and min(height, width) >= 256


def test_attention_render_is_an_rgb_picture():
  attn = np.full((4, 4), 0.25)
  img = render_attention(attn)
  assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3
  assert min(img.shape[:2]) >= 256
  assert img.std() > 0   # not blank


def test_flush_puts_every_point_on_disk_before_a_kill(tmp_path):
  # The loop flushes before each checkpoint; a run SIGKILLed right after a save must find every
  # point up to that step in its events (tensorboardX's SummaryWriter.flush left the last queued
  # ones unwritten, so a resumed run's curve missed the checkpoint's own step).
  script = textwrap.dedent(f"""
      import os
      from transformer.monitoring.writer import MetricWriter
      w = MetricWriter({str(tmp_path)!r})
      for step in range(1, 201):
        w.scalars(step, {{'train/loss': float(step), 'train/accuracy': 0.5}})
      w.flush()
      os._exit(0)   # no close, no atexit: like kill -9 right after the checkpoint
  """)
  subprocess.run([sys.executable, '-c', script], check=True, cwd=os.getcwd())
  points = read_events(tmp_path)['scalars']
  assert [s for s, _ in points['train/loss']] == list(range(1, 201))
  assert len(points['train/accuracy']) == 200


def test_two_writers_in_one_second_keep_both_files(tmp_path):
  first = tlog.MetricWriter(tmp_path)
  first.scalars(1, {'train/loss': 1.0})
  first.close()
  second = tlog.MetricWriter(tmp_path)   # a resume in the same second must not truncate it
  second.scalars(2, {'train/loss': 2.0})
  second.close()
  assert read_events(tmp_path)['scalars']['train/loss'] == [(1, 1.0), (2, 2.0)]


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


def _summary_values(run_dir, tag):
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  return [v for f in _event_files(run_dir) for e in EventFileLoader(f).Load()
          for v in e.summary.value if v.tag == tag]


@pytest.mark.parametrize('spec, groups', [('configs/gpt2.py:tiny', ['']),
                                          ('configs/t5.py:tiny', ['encoder/', 'decoder/',
                                                                  'cross/'])])
def test_custom_scalars_layout(spec, groups, tmp_path):
  import re
  from tensorboard.plugins.custom_scalar import layout_pb2
  from transformer import config as config_lib
  config = config_lib.load(spec)
  w = tlog.MetricWriter(tmp_path)
  w.layout(tlog.scalars_layout(config))
  w.close()
  (value,), = [_summary_values(tmp_path, 'custom_scalars__config__')]
  layout = layout_pb2.Layout.FromString(value.tensor.string_val[0])
  charts = {c.title: {ch.title: list(ch.multiline.tag) for ch in c.chart} for c in layout.category}
  assert list(charts) == ['loss', 'eval', 'perf', 'attention', 'attention heads']
  matches = lambda chart, tag: any(re.match(r, tag) for r in chart)
  # one chart each for train and eval loss (every run of the experiment on it)
  assert matches(charts['loss']['train/loss'], 'train/loss')
  assert not matches(charts['loss']['train/loss'], 'eval/loss')
  assert matches(charts['loss']['eval/loss'], 'eval/loss')
  perf = charts['perf']
  assert [matches(perf[k], t) for k, t in (('tokens/s', 'perf/tokens_per_sec'), ('MFU', 'perf/mfu'),
                                           ('packing efficiency', 'perf/packing_efficiency'))] == [True] * 3
  for prefix in groups:
    what = f' ({prefix[:-1]})' if prefix else ''
    entropy = charts['attention'][f'entropy per layer{what}']
    assert matches(entropy, f'attention/entropy/{prefix}layer1')
    assert not matches(entropy, f'attention/entropy/{prefix}layer1/head0')
    heads = charts['attention heads'][f'distance {prefix}layer1 per head']
    assert matches(heads, f'attention_heads/distance/{prefix}layer1/head3')
  config.log.attention_stats = False
  assert 'attention' not in tlog.scalars_layout(config)


def test_hparams_list_the_swept_keys_first(tmp_path):
  from tensorboard.plugins.hparams import plugin_data_pb2
  hp = {'a.first_alphabetically': 1, 'model.num_layers': 2, 'opt.learning_rate': 3e-3,
        'z.last': 'x'}
  w = tlog.MetricWriter(tmp_path)
  w.hparams(hp, {'eval/loss': None}, first=('opt.learning_rate', 'model.num_layers'))
  w.close()
  (value,) = _summary_values(tmp_path, '_hparams_/experiment')
  infos = plugin_data_pb2.HParamsPluginData.FromString(
      value.metadata.plugin_data.content).experiment.hparam_infos
  assert [i.name for i in infos] == ['opt.learning_rate', 'model.num_layers',
                                     'a.first_alphabetically', 'z.last']
  assert [i.differs for i in infos] == [True, True, False, False]
