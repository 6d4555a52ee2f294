"""--config.log.profile_steps: a 6-step run traces steps 3-4 into its run directory, and a real
TensorBoard server's profile plugin lists that trace (what `./launch.sh tensorboard` shows)."""

import gzip
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from transformer import config as config_lib
from transformer.errors import ConfigError
from transformer import profile_report
from transformer.monitoring import op_profile, profiler
from transformer.training import loop

from tests.e2e.test_tensorboard_server import (SMALL, _free_port, _tensorboard_binary,
                                               persistent_compilation_cache)


def _get(url, timeout=30):
  """JSON from the server (the profile plugin answers gzip-compressed)."""
  with urllib.request.urlopen(url, timeout=timeout) as response:
    body = response.read()
  return json.loads(gzip.decompress(body) if body[:2] == b'\x1f\x8b' else body)


@pytest.fixture(scope='module')
def profiled_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('profile'))
  overrides = {**SMALL, 'train.steps': '6', 'train.eval_every': '6', 'checkpoint.every': '6',
               'log.samples': '0', 'run_name': 'traced', 'log.profile_steps': '3,2'}
  config = config_lib.load('configs/gpt2.py:tiny', overrides)
  with persistent_compilation_cache():
    loop.train(config, workdir)
  return os.path.join(workdir, 'tb_test')


def test_trace_files_land_where_the_profile_plugin_looks(profiled_run):
  files = profiler.trace_files(os.path.join(profiled_run, 'traced'))
  assert len(files) == 1 and os.path.getsize(files[0]) > 1000, files
  # <experiment>/<run>/plugins/profile/<session>/<host>.xplane.pb
  assert files[0].split(os.sep)[-5:-2] == ['traced', 'plugins', 'profile']


def test_tensorboard_profile_plugin_lists_the_trace(profiled_run):
  port = _free_port()
  base = f'http://127.0.0.1:{port}'
  proc = subprocess.Popen([_tensorboard_binary(), '--logdir', profiled_run, '--host',
                           '127.0.0.1', '--port', str(port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  try:
    runs, deadline = [], time.monotonic() + 120
    while not runs:
      assert proc.poll() is None, proc.stderr.read()[-2000:]
      assert time.monotonic() < deadline, 'the profile plugin listed no run within 120 s'
      try:
        runs = _get(f'{base}/data/plugin/profile/runs', timeout=5)
      except (urllib.error.URLError, ConnectionError, OSError):
        time.sleep(0.5)
    assert len(runs) == 1 and runs[0].startswith('traced/'), runs
    tools = _get(f'{base}/data/plugin/profile/run_tools?run={runs[0]}')
    assert any('trace_viewer' in t for t in tools), tools
  finally:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize('value', ['0,3', '4', '5,-1', '1,2,3'])
def test_bad_profile_steps_are_one_line_errors(value):
  with pytest.raises(ConfigError, match='log.profile_steps') as e:
    config_lib.load('configs/gpt2.py:tiny', {'log.profile_steps': value})
  assert '\n' not in str(e.value)


def test_the_report_reads_the_runs_trace_as_two_train_steps(profiled_run, capsys):
  """The op-time report of the run's own trace: the train step, executed twice (steps 3 and 4),
  most of its op time in the matrix products."""
  summary = op_profile.summarize(op_profile.op_events(
      op_profile.trace_file(os.path.join(profiled_run, 'traced'))))
  assert 'train_step' in summary['module'] and summary['executions'] == 2, summary['module']
  products = summary['by_kind']['matrix products']
  assert 0 < products <= summary['ops_s'] and products > 0.3 * summary['ops_s'], summary
  assert profile_report.main([os.path.join(profiled_run, 'traced'), '--top', '3']) == 0
  text = capsys.readouterr().out
  assert '(2 traced;' in text and '| matrix products |' in text
