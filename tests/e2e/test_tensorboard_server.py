"""A real TensorBoard server over two tiny finished runs: every run, the contract tags, the
attention pictures of every layer and head, the custom-scalars layout and the hparams (swept keys
first).

Starts `tensorboard --logdir <experiment> --host 127.0.0.1 --port <free>` (what `./launch.sh
tensorboard` runs) and reads its HTTP data API, the same calls its web page makes.
"""

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import jax
import pytest

from transformer import config as config_lib
from transformer.monitoring import writer as tb
from transformer.training import loop

pytestmark = pytest.mark.slow   # a real TensorBoard server over trained runs

RUNS = {'gpt2_a': ('configs/gpt2.py:tiny', {}), 'bert_b': ('configs/bert.py:tiny', {})}
SMALL = {'train.steps': '2', 'train.batch_size': '4', 'data.seq_len': '32',
         'data.vocab_size': '1024', 'train.eval_every': '2', 'train.eval_steps': '1',
         'train.log_every': '1', 'checkpoint.every': '2', 'checkpoint.async_save': 'false',
         'log.samples': '1', 'log.sample_length': '4', 'log.attention_images': 'true',
         'model.num_layers': '2', 'model.num_heads': '2', 'model.d_model': '32',
         'model.d_ff': '64', 'experiment': 'tb_test',
         'log.hparams_first': "('model.family', 'opt.learning_rate')"}   # as a sweep sets it
STARTUP_S = 120


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _get(url, body=None, timeout=30, raw=False):
  data = json.dumps(body).encode() if body is not None else None
  request = urllib.request.Request(url, data=data, headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=timeout) as response:
    content = response.read()
  return content if raw else json.loads(content)


def _tensorboard_binary():
  path = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
  if not os.path.exists(path):
    pytest.skip('tensorboard is not installed beside this python')
  return path


@contextlib.contextmanager
def persistent_compilation_cache():
  """JAX's on-disk compilation cache for this block (shared with tests/sweeps/test_sweep.py's runs)."""
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  options = {'jax_compilation_cache_dir': os.path.join(tempfile.gettempdir(),
                                                       'transformer_tests_jax_cache'),
             'jax_persistent_cache_min_compile_time_secs': 0.0,
             'jax_persistent_cache_min_entry_size_bytes': 0}
  previous = {k: getattr(jax.config, k) for k in options}
  for k, v in options.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    for k, v in previous.items():
      jax.config.update(k, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope='module')
def experiment_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('tb'))
  with persistent_compilation_cache():
    for name, (spec, overrides) in RUNS.items():
      config = config_lib.load(spec, {**SMALL, **overrides, 'run_name': name})
      loop.train(config, workdir)
  return os.path.join(workdir, 'tb_test')


@pytest.fixture(scope='module')
def server(experiment_dir):
  port = _free_port()
  base = f'http://127.0.0.1:{port}'
  proc = subprocess.Popen([_tensorboard_binary(), '--logdir', experiment_dir, '--host',
                           '127.0.0.1', '--port', str(port), '--reload_interval', '1'],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + STARTUP_S
    while True:   # up, and done loading both runs
      if proc.poll() is not None:
        pytest.fail(f'tensorboard exited with {proc.returncode}: {proc.stderr.read()[-2000:]}')
      try:
        if set(RUNS) <= set(_get(f'{base}/data/runs', timeout=5)):
          break
      except (urllib.error.URLError, ConnectionError, OSError):
        pass
      if time.monotonic() > deadline:
        pytest.fail(f'tensorboard did not list the runs within {STARTUP_S}s')
      time.sleep(0.5)
    yield base
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait(timeout=20)


def test_server_lists_every_run(server):
  assert set(_get(f'{server}/data/runs')) == set(RUNS)


def test_every_run_has_the_contract_scalar_tags(server):
  tags = _get(f'{server}/data/plugin/scalars/tags')
  for run in RUNS:
    missing = set(tb.TAGS) - set(tags[run])
    assert not missing, (run, sorted(missing))
  points = _get(f'{server}/data/plugin/scalars/scalars?run=gpt2_a&tag=train/loss')
  assert [p[1] for p in points] == [1, 2] and all(p[2] > 0 for p in points)


def test_text_samples_are_served(server):
  tags = _get(f'{server}/data/plugin/text/tags')
  assert all(any(t.startswith('samples') for t in tags.get(run, [])) for run in RUNS), tags


def test_hparams_dashboard_has_both_sessions_and_final_metrics(server):
  experiment = _get(f'{server}/data/plugin/hparams/experiment', {'experimentName': ''})
  hparam_names = {h['name'] for h in experiment['hparamInfos']}
  assert {'opt.learning_rate', 'model.family', 'objective'} <= hparam_names
  metric_tags = {m['name']['tag'] for m in experiment['metricInfos']}
  assert {'eval/loss', 'eval/accuracy'} <= metric_tags
  groups = _get(f'{server}/data/plugin/hparams/session_groups', {
      'experimentName': '', 'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS',
                                                'STATUS_FAILURE', 'STATUS_RUNNING'],
      'colParams': [], 'startIndex': 0, 'sliceSize': 10})
  sessions = {s['name']: s for g in groups['sessionGroups'] for s in g['sessions']}
  assert set(RUNS) <= set(sessions), sessions.keys()
  families = {g['hparams']['model.family'] for g in groups['sessionGroups']}
  assert families == {'decoder', 'encoder'}
  for name in RUNS:
    values = {m['name']['tag']: m['value'] for m in sessions[name]['metricValues']}
    assert values['eval/loss'] > 0, values


def _png_size(data):
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  return struct.unpack('>II', data[16:24])   # IHDR: width, height


def test_attention_pictures_of_every_layer_and_head_are_served(server):
  tags = _get(f'{server}/data/plugin/images/tags')
  for run in RUNS:
    assert set(tags[run]) == {f'attention_maps/layer{i}/head{h}' for i in range(2)
                              for h in range(2)}, tags[run]
  query = urllib.parse.urlencode({'run': 'gpt2_a', 'tag': 'attention_maps/layer1/head0'})
  (entry,) = _get(f'{server}/data/plugin/images/images?{query}')
  assert entry['step'] == 2
  width, height = _png_size(_get(f'{server}/data/plugin/images/individualImage?'
                                 f'{entry["query"]}', raw=True))
  assert min(width, height) >= 256


def test_custom_scalars_layout_puts_every_run_on_one_loss_chart(server):
  layout = _get(f'{server}/data/plugin/custom_scalars/layout')
  charts = {c['title']: {ch['title']: ch['multiline']['tag'] for ch in c['chart']}
            for c in layout['category']}
  assert {'loss', 'eval', 'perf', 'attention', 'attention heads'} <= set(charts)
  assert {'tokens/s', 'MFU', 'packing efficiency'} <= set(charts['perf'])
  (regex,) = charts['loss']['train/loss']
  for run in RUNS:   # the chart's regex finds the train loss of every run
    query = urllib.parse.urlencode({'run': run, 'tag': regex})
    answer = _get(f'{server}/data/plugin/custom_scalars/scalars?{query}')
    assert answer['regex_valid'] and list(answer['tag_to_events']) == ['train/loss'], answer
    assert [e[1] for e in answer['tag_to_events']['train/loss']] == [1, 2]
  (regex,) = charts['attention']['entropy per layer']
  query = urllib.parse.urlencode({'run': 'bert_b', 'tag': regex})
  answer = _get(f'{server}/data/plugin/custom_scalars/scalars?{query}')
  assert sorted(answer['tag_to_events']) == ['attention/entropy/layer0',
                                             'attention/entropy/layer1']


def test_hparams_show_the_swept_keys_first(server):
  experiment = _get(f'{server}/data/plugin/hparams/experiment', {'experimentName': ''})
  infos = experiment['hparamInfos']
  assert [h['name'] for h in infos[:2]] == ['model.family', 'opt.learning_rate']
  assert [h.get('differs', False) for h in infos[:3]] == [True, True, False]
