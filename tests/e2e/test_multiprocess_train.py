"""Real 2-process training jobs (2 processes x 2 fake CPU devices, gloo over 127.0.0.1): resume,
eval over shards that pack unevenly, and global token accounting. Slow: each job starts pythons.

The data is a local text file whose validation lines alternate short and long, so process 0's
eval shard (the even lines) packs into far fewer batches than process 1's (the odd lines).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time

import jax
import numpy as np
import pytest

from transformer import data, objectives

from transformer.training import checkpoint

from transformer.training import sharding

from transformer.monitoring import accounting as summary

from transformer.training import evaluation
from transformer.training import setup as run_setup
from transformer import config as config_lib
from transformer.monitoring.events import read_events
from transformer.data import sources
from transformer.training.trainer import Trainer

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, EVERY, EVAL_EVERY = 30, 5, 15
OVERRIDES = {'run_name': 'mp', 'model.num_layers': '1', 'model.d_model': '32',
             'model.num_heads': '2', 'model.d_ff': '64', 'model.dropout_rate': '0.1',
             'data.seq_len': '32', 'data.vocab_size': '512', 'train.batch_size': '8',
             'train.steps': str(STEPS), 'train.log_every': '1', 'train.eval_every': str(EVAL_EVERY),
             'train.eval_steps': '100', 'opt.warmup_steps': '5',
             'checkpoint.every': str(EVERY), 'checkpoint.keep': '10',
             'checkpoint.async_save': 'false', 'log.samples': '0',
             'log.attention_images': 'false'}


def write_corpus(path):
  """Lines of a few stdlib modules; the validation lines (chosen by hash) alternate short/long."""
  lines = []
  for name in ('argparse.py', 'inspect.py', 'typing.py', 'dataclasses.py'):
    with open(os.path.join(sysconfig.get_paths()['stdlib'], name), encoding='utf-8') as f:
      lines += [line.strip() for line in f if line.strip()]
  valid = [line for line in lines if sources._is_local_validation(line)]  # pylint: disable=protected-access
  train_lines = [line for line in lines if not sources._is_local_validation(line)]  # pylint: disable=protected-access
  valid.sort(key=len)
  half = len(valid) // 2
  short, long = valid[:half], valid[half:][::-1]
  ordered = [x for pair in zip(short, long) for x in pair]
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(train_lines + ordered) + '\n')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Job:
  """`n` processes of `python -m transformer.train` forming one jax.distributed job."""

  def __init__(self, workdir, corpus, n=2, extra=()):
    port = _free_port()
    self.procs = []
    argv = ['--config', 'configs/gpt2.py:tiny', *[f'--config.{k}={v}' for k, v in
                                                  OVERRIDES.items()],
            f'--config.data.source=text:{corpus}', f'--workdir={workdir}', *extra]
    for i in range(n):
      env = {k: v for k, v in os.environ.items() if not k.startswith(('TRANSFORMER_', 'SLURM_'))}
      env.update(XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu',
                 CUDA_VISIBLE_DEVICES='', PYTHONPATH=ROOT, PYTHONUNBUFFERED='1')
      if n > 1:
        env.update(TRANSFORMER_COORDINATOR=f'127.0.0.1:{port}', TRANSFORMER_NUM_PROCESSES=str(n),
                   TRANSFORMER_PROCESS_ID=str(i), TRANSFORMER_HEARTBEAT_TIMEOUT='30')
      log = tempfile.TemporaryFile('w+')   # pylint: disable=consider-using-with
      proc = subprocess.Popen([sys.executable, '-m', 'transformer.train', *argv], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
      proc.log = log
      self.procs.append(proc)

  def output(self, i=0):
    self.procs[i].log.seek(0)
    return self.procs[i].log.read()

  def finish(self, timeout=400):
    """Exit codes of every process (killing all on a timeout: a hung collective fails here)."""
    try:
      for p in self.procs:
        p.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f'the job did not finish in {timeout}s:\n{self.output(0)[-2000:]}\n'
                  f'{self.output(len(self.procs) - 1)[-2000:]}')
    return [p.returncode for p in self.procs]

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    for p in self.procs:
      p.wait()


def run_path(workdir):
  return os.path.join(workdir, 'default', 'mp')


def steps_saved(workdir):
  try:
    return sorted(int(d) for d in os.listdir(os.path.join(run_path(workdir), 'checkpoints'))
                  if d.isdigit())
  except FileNotFoundError:
    return []


def scalars(workdir, prefix=('train/', 'eval/')):
  return {tag: dict(points) for tag, points in read_events(run_path(workdir))['scalars'].items()
          if tag.startswith(prefix)}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp('corpus') / 'lines.txt'
  write_corpus(path)
  return str(path)


@pytest.fixture(scope='module')
def setup(corpus):
  """The run's config, tokenizer (trained here, so the jobs find it cached) and objective."""
  config = config_lib.load('configs/gpt2.py:tiny',
                           {**OVERRIDES, 'data.source': f'text:{corpus}'})
  tokenizer = data.get_tokenizer(config)
  config = run_setup.resolve(config, tokenizer)
  return config, tokenizer, objectives.get(config, tokenizer)


def shard_batches(setup, split, count=None):
  """Each process's first `count` batches (every batch when None) of `split`."""
  config, tokenizer, objective = setup
  out = []
  for i in range(2):
    it = data.Pipeline(config, objective, tokenizer, split=split, process_index=i,
                       process_count=2).iterator(0)
    out.append([b for _, b in zip(range(count or 10**6), it)])
  return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory, corpus):
  """The uninterrupted 2-process run."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  job = Job(workdir, corpus)
  codes = job.finish()
  assert codes == [0, 0], (codes, job.output(0)[-3000:], job.output(1)[-3000:])
  return workdir


@pytest.fixture(scope='module')
def resumed(tmp_path_factory, corpus, reference):
  """A 2-process run SIGKILLed once its first checkpoint is on disk, then run again."""
  del reference   # runs first: the compile cache and tokenizer are warm
  workdir = str(tmp_path_factory.mktemp('killed'))
  job = Job(workdir, corpus)
  deadline = time.monotonic() + 600
  while not steps_saved(workdir):
    assert all(p.poll() is None for p in job.procs), job.output(0)[-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.01)
  job.kill()
  killed_at = steps_saved(workdir)
  assert killed_at and killed_at[-1] < STEPS, killed_at
  copy = str(tmp_path_factory.mktemp('killed_copy') / 'w')
  shutil.copytree(workdir, copy)
  again = Job(workdir, corpus)
  codes = again.finish()
  assert codes == [0, 0], (codes, again.output(0)[-3000:], again.output(1)[-3000:])
  return {'workdir': workdir, 'killed_at': killed_at[-1], 'copy': copy, 'out': again.output(0)}


def _params(workdir, setup, step):
  config, _, objective = setup
  trainer = Trainer.create(config, objective, sharding.make_mesh(config.mesh, jax.devices()[:1]),
                           STEPS)
  params, missing, _ = checkpoint.load_pretrained(os.path.join(run_path(workdir), 'checkpoints'),
                                                  trainer.init_state()['params'])
  assert not missing and step in steps_saved(workdir)
  return trainer, jax.device_get(params)


def _positions(workdir):
  ckpt = checkpoint.Checkpointer(os.path.join(run_path(workdir), 'checkpoints'), every=EVERY,
                                 keep=10)
  try:
    return {s: ckpt.data_position(s) for s in ckpt.all_steps()}
  finally:
    ckpt.close()


def test_two_process_resume_sees_every_process_batches_again(reference, resumed, setup):
  assert f'from step {resumed["killed_at"]}' in resumed['out'], resumed['out'][-2000:]
  # Every step's global batch is the same: every logged loss equals the uninterrupted run's.
  got, ref = scalars(resumed['workdir']), scalars(reference)
  assert sorted(ref['train/loss']) == list(range(1, STEPS + 1))
  assert got['train/loss'] == ref['train/loss']
  assert got == ref
  _, final = _params(resumed['workdir'], setup, STEPS)
  _, ref_final = _params(reference, setup, STEPS)
  for x, y in zip(jax.tree.leaves(final), jax.tree.leaves(ref_final)):
    np.testing.assert_array_equal(x, y)
  # Each process's own position is saved (the shards pack differently) and comes back.
  ref_positions, positions = _positions(reference), _positions(resumed['workdir'])
  assert sorted(positions) == sorted(ref_positions) == list(range(EVERY, STEPS + 1, EVERY))
  assert len(ref_positions[STEPS]['positions']) == 2
  assert ref_positions[STEPS]['positions'][0] != ref_positions[STEPS]['positions'][1]
  assert positions == ref_positions


def test_resume_with_another_process_count_is_refused(resumed, corpus):
  workdir = resumed['copy']
  before = sorted(os.listdir(os.path.join(run_path(workdir), 'checkpoints')))
  job = Job(workdir, corpus, n=1)
  assert job.finish() == [2], job.output()[-3000:]
  errors = [line for line in job.output().splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'saved by 2 processes' in errors[0] and 'has 1' in errors[0], errors
  assert sorted(os.listdir(os.path.join(run_path(workdir), 'checkpoints'))) == before


def test_two_process_eval_covers_uneven_shards_exactly(reference, setup):
  """The shards pack into different numbers of eval batches; the job still finishes (no
  process waits forever in a collective eval step) and eval/loss is the loss over every eval
  example of both shards, as one process computes it from the final parameters."""
  counts = [len(b) for b in shard_batches(setup, 'eval')]
  assert counts[0] < counts[1] <= 100, counts
  trainer, params = _params(reference, setup, STEPS)
  eval_fn = jax.jit(trainer.eval_step)
  sums = {}
  for shard in shard_batches(setup, 'eval'):
    for batch in shard:
      sums = evaluation.accumulate(sums, jax.device_get(eval_fn(params, sharding.global_batch(  # pylint: disable=protected-access
          batch, trainer.mesh))))
  expected = evaluation.average(sums)  # pylint: disable=protected-access
  logged = scalars(reference, ('eval/',))
  assert sorted(logged['eval/loss']) == [EVAL_EVERY, STEPS]
  assert logged['eval/loss'][STEPS] == pytest.approx(expected['loss'], rel=1e-5)
  assert logged['eval/accuracy'][STEPS] == pytest.approx(expected['accuracy'], rel=1e-5)


def test_two_process_token_accounting_is_global(reference, setup):
  """tokens_seen, tokens/s and TFLOP/s per device count both processes' rows."""
  config = setup[0]
  per_step = [sum(int(np.count_nonzero(b['targets_segment_ids'])) for b in step)
              for step in zip(*shard_batches(setup, 'train', STEPS))]
  got = {tag: scalars(reference, ('train/', 'perf/'))[tag] for tag in
         ('train/tokens_seen', 'perf/tokens_per_sec', 'perf/steps_per_sec',
          'perf/tflops_per_device')}
  assert got['train/tokens_seen'] == {s: pytest.approx(sum(per_step[:s]), abs=0.5)
                                      for s in range(1, STEPS + 1)}
  flops_token = summary.flops_per_token(config)['total_train']
  for s in range(1, STEPS + 1):   # log_every=1: tokens/s / steps/s = this step's tokens
    tps = got['perf/tokens_per_sec'][s]
    assert tps / got['perf/steps_per_sec'][s] == pytest.approx(per_step[s - 1], rel=1e-4)
    assert got['perf/tflops_per_device'][s] * 1e12 * 4 / tps == pytest.approx(flops_token,
                                                                            rel=1e-4)


@pytest.fixture(scope='module')
def preempted(tmp_path_factory, corpus, reference):
  """A 2-process run whose process 1 alone gets SIGTERM once both have joined the job, then
  run again to the end."""
  del reference   # runs first: the compile cache and tokenizer are warm
  workdir = str(tmp_path_factory.mktemp('preempted'))
  job = Job(workdir, corpus)
  deadline = time.monotonic() + 600
  while not os.path.exists(os.path.join(run_path(workdir), 'config.json')):   # both joined
    assert all(p.poll() is None for p in job.procs), job.output(0)[-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.01)
  job.procs[1].send_signal(signal.SIGTERM)
  codes = job.finish(timeout=240)
  outputs = [job.output(0), job.output(1)]
  assert codes == [0, 0], (codes, outputs[0][-3000:], outputs[1][-3000:])
  saved = steps_saved(workdir)
  again = Job(workdir, corpus)
  assert again.finish() == [0, 0], (again.output(0)[-3000:], again.output(1)[-3000:])
  return {'workdir': workdir, 'outputs': outputs, 'saved': saved}


def test_sigterm_to_one_process_stops_every_process_at_one_step(preempted, reference, setup):
  """Only process 1 is signalled: both stop and save at the same step (jax's preemption sync
  point), and the resumed run is the uninterrupted run, loss for loss and weight for weight."""
  stops = [[line for line in out.splitlines() if line.startswith('Stopped')]
           for out in preempted['outputs']]
  assert all(len(s) == 1 for s in stops), stops
  steps = [int(s[0].split(' at step ')[1].split(';')[0]) for s in stops]
  assert steps[0] == steps[1] < STEPS and preempted['saved'][-1] == steps[0], (stops,
                                                                               preempted['saved'])
  assert scalars(preempted['workdir']) == scalars(reference)
  _, final = _params(preempted['workdir'], setup, STEPS)
  _, ref_final = _params(reference, setup, STEPS)
  for x, y in zip(jax.tree.leaves(final), jax.tree.leaves(ref_final)):
    np.testing.assert_array_equal(x, y)
