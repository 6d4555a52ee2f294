"""Multi-process start-up: what `distributed.plan()` reads from each launcher's environment (in
process), and real multi-process jobs on this machine (slow: each starts several pythons).

Multi-process parity tolerance (float32): the losses of 2 processes x 4 fake CPU devices equal
those of 1 process x 8 devices to rtol 1e-6 (the same mesh and program; only the collectives'
transport differs).
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from transformer.training import distributed
from transformer.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(ROOT, 'tests', 'e2e', 'sharding_helper.py')


# --- plan(): every launcher's environment, nothing started ------------------------------------


def test_no_launcher_means_one_process():
  assert distributed.plan({}) is None
  assert distributed.plan({'SLURM_JOB_ID': '7'}) is None   # salloc shell, not inside srun


def test_explicit_environment():
  env = {'TRANSFORMER_COORDINATOR': '10.0.0.1:1234', 'TRANSFORMER_NUM_PROCESSES': '4',
         'TRANSFORMER_PROCESS_ID': '3', 'TRANSFORMER_LOCAL_DEVICE_IDS': '0,1',
         'TRANSFORMER_HEARTBEAT_TIMEOUT': '10'}
  assert distributed.plan(env) == {
      'coordinator_address': '10.0.0.1:1234', 'num_processes': 4, 'process_id': 3,
      'local_device_ids': [0, 1], 'heartbeat_timeout_seconds': 10,
      'initialization_timeout': 300}
  one = {**env, 'TRANSFORMER_NUM_PROCESSES': '1', 'TRANSFORMER_PROCESS_ID': '0'}
  assert distributed.plan(one) is None


def _slurm(**extra):
  env = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_ID': '0', 'SLURM_STEP_NODELIST': 'gpu[01-02]',
         'SLURM_NTASKS': '16', 'SLURM_PROCID': '9', 'SLURM_LOCALID': '1',
         'SLURM_STEP_NUM_NODES': '2'}
  env.update(extra)
  return env


def test_slurm_one_task_per_gpu():
  kwargs = distributed.plan(_slurm())
  assert kwargs['cluster_detection_method'] == 'slurm'
  assert 'local_device_ids' not in kwargs   # jax gives task $SLURM_LOCALID its GPU
  assert 'coordinator_address' not in kwargs and 'process_id' not in kwargs
  # --gpus-per-task=1: SLURM shows each task only its own GPU, as device 0.
  assert distributed.plan(_slurm(CUDA_VISIBLE_DEVICES='5'))['local_device_ids'] == [0]


def test_slurm_one_task_per_node():
  env = _slurm(SLURM_NTASKS='2', SLURM_PROCID='1', SLURM_LOCALID='0', SLURM_GPUS_ON_NODE='8')
  assert distributed.plan(env)['local_device_ids'] == list(range(8))
  env = _slurm(SLURM_NTASKS='2', SLURM_PROCID='1', SLURM_LOCALID='0', CUDA_VISIBLE_DEVICES='0,1,2,3')
  assert distributed.plan(env)['local_device_ids'] == [0, 1, 2, 3]


def test_slurm_single_task_is_one_process():
  assert distributed.plan(_slurm(SLURM_NTASKS='1', SLURM_STEP_NUM_NODES='1')) is None


def test_tpu_vm_or_auto_lets_jax_detect(monkeypatch):
  kwargs = distributed.plan({'TRANSFORMER_DISTRIBUTED': 'auto', 'TRANSFORMER_INIT_TIMEOUT': '60'})
  assert kwargs == {'heartbeat_timeout_seconds': 60, 'initialization_timeout': 60}
  monkeypatch.setattr(distributed, '_on_tpu_vm', lambda: True)
  assert distributed.plan({}) == {'heartbeat_timeout_seconds': 60, 'initialization_timeout': 300}


@pytest.mark.parametrize('env, names', [
    ({'TRANSFORMER_COORDINATOR': 'h:1', 'TRANSFORMER_NUM_PROCESSES': '2'},
     ['TRANSFORMER_PROCESS_ID', 'set all three']),
    ({'TRANSFORMER_COORDINATOR': 'h:1', 'TRANSFORMER_NUM_PROCESSES': '2',
      'TRANSFORMER_PROCESS_ID': '2'}, ['TRANSFORMER_PROCESS_ID=2', '[0, ']),
    ({'TRANSFORMER_COORDINATOR': 'h:1', 'TRANSFORMER_NUM_PROCESSES': 'two',
      'TRANSFORMER_PROCESS_ID': '0'}, ['TRANSFORMER_NUM_PROCESSES', 'integer']),
    ({'TRANSFORMER_COORDINATOR': 'h:1', 'TRANSFORMER_NUM_PROCESSES': '2',
      'TRANSFORMER_PROCESS_ID': '-1'}, ['TRANSFORMER_PROCESS_ID=-1']),
    ({'TRANSFORMER_COORDINATOR': 'h:1', 'TRANSFORMER_NUM_PROCESSES': '2',
      'TRANSFORMER_PROCESS_ID': '0', 'TRANSFORMER_LOCAL_DEVICE_IDS': 'a,b'},
     ['TRANSFORMER_LOCAL_DEVICE_IDS', 'comma-separated']),
    ({'TRANSFORMER_DISTRIBUTED': 'auto', 'TRANSFORMER_HEARTBEAT_TIMEOUT': '0'},
     ['TRANSFORMER_HEARTBEAT_TIMEOUT', 'positive']),
])
def test_bad_environment_is_a_one_line_error(env, names):
  with pytest.raises(ConfigError) as e:
    distributed.plan(env)
  assert '\n' not in str(e.value)
  for name in names:
    assert name in str(e.value), (name, str(e.value))


# --- real multi-process jobs (2 local processes, gloo over 127.0.0.1) --------------------------


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices, **extra):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='', PYTHONPATH=ROOT)
  for key in list(env):
    if key.startswith(('TRANSFORMER_', 'SLURM_')):
      del env[key]
  env.update(extra)
  return env


def _job_env(n, i, port, devices, **extra):
  return _env(devices, TRANSFORMER_COORDINATOR=f'127.0.0.1:{port}',
              TRANSFORMER_NUM_PROCESSES=str(n), TRANSFORMER_PROCESS_ID=str(i), **extra)


def _helper_job(n, devices, *args, **extra):
  """n processes of sharding_helper.py; stderr goes to a file (a full pipe would block them)."""
  port = _free_port()
  procs = []
  for i in range(n):
    err = tempfile.TemporaryFile('w+')
    procs.append(subprocess.Popen([sys.executable, HELPER, *args], stdout=subprocess.PIPE,
                                  stderr=err, text=True,
                                  env=_job_env(n, i, port, devices, **extra)))
    procs[-1].err = err
  return procs


def _stderr(proc):
  proc.err.seek(0)
  return proc.err.read()[-3000:]


def _result(proc, timeout):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, _stderr(proc)
  return json.loads(out.strip().splitlines()[-1])[0]


@pytest.mark.slow
def test_two_processes_train_like_one_with_all_devices():
  procs = _helper_job(2, 4, 'multiprocess', '3')
  try:
    multi = [_result(p, 600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  single = subprocess.run([sys.executable, HELPER, 'multiprocess', '3'], env=_env(8),
                          capture_output=True, text=True, timeout=600, check=False)
  assert single.returncode == 0, single.stderr[-3000:]
  single = json.loads(single.stdout.strip().splitlines()[-1])[0]
  assert [r['processes'] for r in multi] == [2, 2] and single['processes'] == 1
  assert [r['local_devices'] for r in multi] == [4, 4] and single['local_devices'] == 8
  assert all(r['devices'] == 8 for r in multi + [single])
  assert multi[0]['losses'] == multi[1]['losses']   # one global computation
  np.testing.assert_allclose(multi[0]['losses'], single['losses'], rtol=1e-6)
  assert single['losses'][0] != single['losses'][-1]
  print('2x4 vs 1x8 losses:', multi[0]['losses'], single['losses'])


@pytest.mark.slow
@pytest.mark.parametrize('victim', [1, 0])
def test_a_killed_process_stops_the_others(victim):
  """SIGKILL one process mid-training: the survivor exits non-zero within a bounded time."""
  procs = _helper_job(2, 2, 'multiprocess', '2', '1', TRANSFORMER_HEARTBEAT_TIMEOUT='10')
  try:
    for p in procs:   # both compiled and stepping (gloo's own lines come first)
      while (line := p.stdout.readline()) and line.strip() != 'ready':
        pass
      assert line, (p.wait(timeout=60), _stderr(p))
    time.sleep(2)
    procs[victim].send_signal(signal.SIGKILL)
    survivor = procs[1 - victim]
    t0 = time.monotonic()
    survivor.wait(timeout=120)
    took = time.monotonic() - t0
  finally:
    for p in procs:
      p.kill()
      p.communicate()
  assert survivor.returncode != 0, _stderr(survivor)
  assert took < 60, (took, _stderr(survivor))
  print(f'survivor of killed process {victim} exited {survivor.returncode} after {took:.1f}s: '
        f'{next((l for l in _stderr(survivor).splitlines() if "rror" in l), "")[:300]}')


TINY_RUN = ['--config', 'configs/gpt2.py:tiny', '--config.model.num_layers=1',
            '--config.model.d_model=32', '--config.model.num_heads=2', '--config.model.d_ff=64',
            '--config.data.seq_len=32', '--config.data.vocab_size=1024',
            '--config.train.batch_size=8', '--config.train.steps=4', '--config.train.log_every=2',
            '--config.train.eval_every=4', '--config.train.eval_steps=1',
            '--config.checkpoint.every=2', '--config.checkpoint.async_save=false',
            '--config.log.samples=1', '--config.log.sample_length=4',
            '--config.mesh.shape=(1, -1, 1)',
            '--config.mesh.preset=fsdp']


@pytest.mark.slow
def test_launch_sh_two_processes_log_from_process_zero_only(tmp_path):
  """The real entry point: 2 processes x 2 devices, one run directory, one events file."""
  env = _env(1, VENV=sys.prefix)
  env.pop('XLA_FLAGS')
  proc = subprocess.run(['./launch.sh', 'train', '--num_processes', '2', '--devices_per_process',
                         '2', *TINY_RUN, f'--workdir={tmp_path}'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('mesh   {') == 1 and "'fsdp': 4" in proc.stdout, proc.stdout[-2000:]
  assert '(2 processes)' in proc.stdout and 'not written in multi-process runs' in proc.stdout
  events = glob.glob(str(tmp_path / '**' / 'events.out.tfevents.*'), recursive=True)
  assert len(events) == 1, events
  run = os.path.dirname(events[0])
  assert sorted(os.listdir(tmp_path / 'default')) == [os.path.basename(run)]
  assert os.path.isdir(os.path.join(run, 'checkpoints', '4'))


def _children(pid):
  """{TRANSFORMER_PROCESS_ID: pid} of the processes `pid` started (read from /proc)."""
  out = {}
  for stat in glob.glob('/proc/[0-9]*/stat'):
    try:
      with open(stat) as f:
        ppid = int(f.read().rsplit(')', 1)[1].split()[1])
      if ppid != pid:
        continue
      with open(stat[:-len('stat')] + 'environ', 'rb') as f:
        env = dict(v.split(b'=', 1) for v in f.read().split(b'\0') if b'=' in v)
    except (OSError, ValueError, IndexError):
      continue
    if b'TRANSFORMER_PROCESS_ID' in env:
      out[int(env[b'TRANSFORMER_PROCESS_ID'])] = int(stat.split('/')[2])
  return out


def test_launch_sh_passes_a_config_error_on_as_exit_code_2(tmp_path):
  """Every process refuses a data path it cannot read: the job exits 2, like one process."""
  env = _env(1, VENV=sys.prefix)
  proc = subprocess.run(['./launch.sh', 'train', '--num_processes', '2', *TINY_RUN,
                         '--config.data.source=text:/nonexistent/*.txt', f'--workdir={tmp_path}'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert 'error: ' in proc.stderr and 'data.source' in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('victim', [1, 0])
def test_launch_sh_survivors_of_a_killed_process_exit_in_time(victim, tmp_path):
  """SIGKILL one of 2 processes while they checkpoint every step: launch.sh stops the survivor
  (which then must not hang in a collective save without its peer) and exits with the killed
  process's code, 128 + SIGKILL, within the heartbeat bound."""
  heartbeat = 10
  env = _env(1, VENV=sys.prefix, TRANSFORMER_HEARTBEAT_TIMEOUT=str(heartbeat))
  log = open(tmp_path / 'log.txt', 'w+')   # pylint: disable=consider-using-with
  run = [a for a in TINY_RUN if not a.startswith(('--config.train.steps', '--config.checkpoint'))]
  proc = subprocess.Popen(['./launch.sh', 'train', '--num_processes', '2', *run,
                           '--config.train.steps=100000', '--config.checkpoint.every=1',
                           '--config.checkpoint.async_save=true', f'--workdir={tmp_path}'],
                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  ckpts = tmp_path / 'default' / 'gpt2_tiny' / 'checkpoints'
  try:
    deadline = time.monotonic() + 600
    while not (ckpts.is_dir() and any(d.name.isdigit() and int(d.name) >= 3
                                      for d in ckpts.iterdir())):
      assert proc.poll() is None and time.monotonic() < deadline, log.seek(0) or log.read()[-3000:]
      time.sleep(0.1)
    children = _children(proc.pid)
    assert sorted(children) == [0, 1], children
    os.kill(children[victim], signal.SIGKILL)
    t0 = time.monotonic()
    code = proc.wait(timeout=300)
    took = time.monotonic() - t0
  finally:
    proc.kill()
    proc.wait()
  log.seek(0)
  assert code == 128 + signal.SIGKILL, (code, log.read()[-3000:])
  assert took < heartbeat + 30, took   # the heartbeat bound, with room for a loaded machine
  assert not _children(proc.pid)
