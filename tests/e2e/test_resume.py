"""Exact resume: a run stopped by SIGTERM or killed by SIGKILL, then restarted with the same command,
ends bit-identical to an uninterrupted run (parameters, optimizer state and the logged loss).

The runs are real `python -m transformer.train` processes on the embedded corpus, with dropout on
so that the per-step dropout keys matter too. Checkpoints are saved asynchronously
(`checkpoint.async_save=True`, the default): SIGTERM must wait for its final save, and a SIGKILL
may land in the middle of a later write, which orbax must leave invisible (it writes each step
into a temporary directory and renames it when complete).

The processes share a JAX persistent compilation cache, so only the first one compiles.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from transformer.training import checkpoint
from transformer.monitoring.events import read_events

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 60
EVERY = 5
# A tiny GPT-2 with dropout, one loss point per step, eval and samples only at the end.
ARGS = ['--config', 'configs/gpt2.py:tiny', '--config.run_name=resume',
        '--config.model.num_layers=1', '--config.model.d_model=32', '--config.model.num_heads=2',
        '--config.model.d_ff=64', '--config.model.dropout_rate=0.1',
        '--config.model.attention_dropout_rate=0.1',
        '--config.data.seq_len=32', '--config.data.vocab_size=1024', '--config.train.batch_size=4',
        f'--config.train.steps={STEPS}', f'--config.train.eval_every={STEPS}',
        '--config.train.eval_steps=1', '--config.train.log_every=1', '--config.opt.warmup_steps=5',
        f'--config.checkpoint.every={EVERY}', '--config.checkpoint.keep=2',
        '--config.checkpoint.async_save=true', '--config.log.samples=0',
        '--config.log.attention_images=false']


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The environment of every training process: CPU only, repo importable, one compile cache.

  Two things only make the processes cheaper: XLA's CPU backend optimisations are off (same flags
  for every run, so results stay comparable) and torch, installed for the reference-model tests
  only, is hidden (tensorboardX imports it when present, seconds per process).
  """
  no_torch = tmp_path_factory.mktemp('no_torch')
  (no_torch / 'torch').mkdir()
  (no_torch / 'torch' / '__init__.py').write_text(
      'raise ImportError("torch is hidden from the training processes of test_resume.py")\n')
  e = dict(os.environ)
  e.update(PYTHONPATH=os.pathsep.join([REPO, str(no_torch)] + [p for p in e.get(
      'PYTHONPATH', '').split(os.pathsep) if p]), TF_CPP_MIN_LOG_LEVEL='3',
           CUDA_VISIBLE_DEVICES='', JAX_PLATFORMS='cpu',
           XLA_FLAGS='--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true',
           JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return e


def start(workdir, env, *extra):
  return subprocess.Popen([sys.executable, '-m', 'transformer.train', *ARGS,
                           f'--workdir={workdir}', *extra], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, f'exit code {proc.returncode}:\n{out[-3000:]}'
  return out


def ckpt_dir(workdir):
  return os.path.join(workdir, 'default', 'resume', 'checkpoints')


def finalized_steps(workdir):
  """Steps whose orbax directory is complete (in-progress writes live under a temporary name)."""
  try:
    return sorted(int(d) for d in os.listdir(ckpt_dir(workdir)) if d.isdigit())
  except FileNotFoundError:
    return []


def wait_for_checkpoint(proc, workdir, timeout=300):
  deadline = time.monotonic() + timeout
  while not finalized_steps(workdir):
    if proc.poll() is not None:
      pytest.fail(f'training exited ({proc.returncode}) before its first checkpoint:\n'
                  f'{proc.stdout.read()[-3000:]}')
    assert time.monotonic() < deadline, 'no checkpoint within the timeout'
    time.sleep(0.02)


def restore(workdir, step=None):
  """(step, state as numpy, data position) of a run's checkpoint, via transformer.checkpoint."""
  ckpt = checkpoint.Checkpointer(ckpt_dir(workdir), every=EVERY, keep=2)
  try:
    s, state, position = ckpt.restore(None, step=step)
  finally:
    ckpt.close()
  return s, jax.device_get(state), position


def train_scalars(workdir):
  """{tag: {step: value}} of the train/ scalars (loss, accuracy, learning rate, tokens seen...)."""
  scalars = read_events(os.path.join(workdir, 'default', 'resume'))['scalars']
  return {tag: dict(points) for tag, points in scalars.items() if tag.startswith('train/')}


def assert_same_run(workdir, reference):
  """The final checkpoint and every logged loss of `workdir` equal those of `reference`."""
  step, state, position = restore(workdir)
  ref_step, ref_state, ref_position = reference['checkpoint']
  assert step == ref_step == STEPS and position == ref_position
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  ref_flat = jax.tree_util.tree_flatten_with_path(ref_state)[0]
  assert [p for p, _ in flat] == [p for p, _ in ref_flat]
  for (path, x), (_, y) in zip(flat, ref_flat):   # params, optimizer moments, step: every bit
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  got = train_scalars(workdir)
  assert got['train/loss'][STEPS] == reference['scalars']['train/loss'][STEPS]
  # Every step is logged exactly as the uninterrupted run logged it, tokens seen included.
  assert got == reference['scalars']


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
  """The uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  finish(start(workdir, env))
  return {'checkpoint': restore(workdir), 'scalars': train_scalars(workdir)}


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory, env, reference):
  """Two runs started side by side: one stopped by SIGTERM, one killed by SIGKILL, each once its
  first checkpoint is complete. Returns their workdirs and what happened."""
  del reference   # runs first, so these two find the train step in the compile cache
  term_dir = str(tmp_path_factory.mktemp('sigterm'))
  kill_dir = str(tmp_path_factory.mktemp('sigkill'))
  term, kill = start(term_dir, env), start(kill_dir, env)
  wait_for_checkpoint(term, term_dir)
  term.send_signal(signal.SIGTERM)
  wait_for_checkpoint(kill, kill_dir)
  kill.send_signal(signal.SIGKILL)
  kill.wait(timeout=60)
  term_out = finish(term)
  stopped_copy = str(tmp_path_factory.mktemp('stopped') / 'run')
  shutil.copytree(term_dir, stopped_copy)   # resumed with another batch size below
  stopped_step, stopped_state, stopped_position = restore(term_dir)
  return {'sigterm': term_dir, 'sigterm_out': term_out, 'sigkill': kill_dir,
          'sigkill_code': kill.returncode, 'stopped_copy': stopped_copy,
          'stopped_step': stopped_step, 'stopped_state_step': int(stopped_state['step']),
          'stopped_position': stopped_position['positions'][0],
          'killed_steps': finalized_steps(kill_dir)}


@pytest.fixture(scope='module')
def resumed(interrupted, env):
  """The same command run again on both interrupted workdirs, and on a copy of the stopped one
  with another batch size; the three processes run side by side. Returns their outputs."""
  stopped = interrupted['stopped_copy']
  procs = {'sigterm': start(interrupted['sigterm'], env),
           'sigkill': start(interrupted['sigkill'], env),
           'batch_size': start(stopped, env, '--config.train.batch_size=8')}
  out = {name: finish(proc) for name, proc in procs.items()}
  return out


def test_sigterm_saves_and_exits_cleanly(interrupted):
  out = interrupted['sigterm_out']
  assert 'Stopped by SIGTERM' in out, out[-2000:]
  stopped = interrupted['stopped_step']
  assert stopped < STEPS, f'the signal arrived too late to interrupt anything ({stopped})'
  assert f'at step {stopped};' in out          # the step it stopped at is the one it saved
  assert interrupted['stopped_state_step'] == stopped
  assert interrupted['stopped_position'][0] > 0
  assert interrupted['sigkill_code'] == -signal.SIGKILL
  kept = interrupted['killed_steps']
  assert kept and kept[-1] < STEPS, kept       # killed in the middle of training


def test_resume_after_sigterm_is_bit_identical(interrupted, resumed, reference):
  stopped = interrupted['stopped_step']
  assert f'from step {stopped}' in resumed['sigterm'], resumed['sigterm'][-2000:]
  assert_same_run(interrupted['sigterm'], reference)


def test_resume_after_sigkill_is_bit_identical(interrupted, resumed, reference):
  kept = interrupted['killed_steps'][-1]
  assert f'from step {kept}' in resumed['sigkill'], resumed['sigkill'][-2000:]
  assert_same_run(interrupted['sigkill'], reference)
  # No temporary directory of an interrupted write is left behind.
  names = os.listdir(ckpt_dir(interrupted['sigkill']))
  assert all(d.isdigit() for d in names), names


def test_resume_with_another_batch_size(interrupted, resumed):
  workdir = interrupted['stopped_copy']
  assert 'Resumed' in resumed['batch_size'], resumed['batch_size'][-2000:]
  step, state, position = restore(workdir)
  assert step == STEPS and int(state['step']) == STEPS
  # The data went on from where the stopped run was (positions count examples, not batches).
  assert position['positions'][0] > interrupted['stopped_position']
  assert all(np.isfinite(v) for v in train_scalars(workdir)['train/loss'].values())
  with open(os.path.join(workdir, 'default', 'resume', 'config.json')) as f:
    assert json.load(f)['train']['batch_size'] == 8


# --- SIGKILL at ten seeded moments ----------------------------------------------------------

KILL_STEPS, KILL_EVERY, KILL_EVAL_EVERY = 300, 5, 50
KILL_ARGS = [f'--config.train.steps={KILL_STEPS}', f'--config.train.eval_every={KILL_EVAL_EVERY}',
             '--config.train.eval_steps=2', f'--config.checkpoint.every={KILL_EVERY}']
# Where each kill lands, drawn once from a fixed seed: two during start-up (imports, data,
# tokenizer), two while the train step compiles or the checkpoint restores, three while it
# trains, three while an asynchronous checkpoint is being written.
MOMENTS = list(np.random.default_rng(8).permutation(
    ['start-up'] * 2 + ['compile'] * 2 + ['mid-step'] * 3 + ['mid-checkpoint'] * 3))
DELAYS = np.random.default_rng(9).uniform(0.0, 1.0, size=len(MOMENTS))


def _logged(workdir):
  """{tag: {step: value}} of every train/ and eval/ scalar of a run."""
  scalars = read_events(os.path.join(workdir, 'default', 'resume'))['scalars']
  return {tag: dict(points) for tag, points in scalars.items()
          if tag.startswith(('train/', 'eval/'))}


def _kill_at(moment, delay, workdir, env, log_path):
  """Start the run, SIGKILL it at `moment` (`delay` in [0, 1) places it within that phase);
  returns what it printed. Events are read from its output and checkpoint directory, so the
  moment is the same phase however loaded the machine is."""
  with open(log_path, 'w') as log:
    proc = subprocess.Popen([sys.executable, '-m', 'transformer.train', *ARGS, *KILL_ARGS,
                             f'--workdir={workdir}'], cwd=REPO, env={**env, 'PYTHONUNBUFFERED': '1'},
                            stdout=log, stderr=subprocess.STDOUT, text=True)

  def printed(text):
    with open(log_path) as f:
      return text in f.read()

  def wait_for(condition, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
      assert proc.poll() is None, f'the run ended ({proc.returncode}) before its {moment} kill'
      assert time.monotonic() < deadline, f'no {moment} moment within {timeout}s'
      time.sleep(0.001)

  try:
    if moment == 'start-up':
      time.sleep(2.0 * delay)
    elif moment == 'compile':
      wait_for(lambda: printed('mesh   {'))   # console.mesh_line, before the compile
      time.sleep(0.5 * delay)
    elif moment == 'mid-step':
      wait_for(lambda: printed('Training '))
      time.sleep(0.3 * delay)
    else:   # an async save in flight: its temporary directory exists (or it just completed)
      wait_for(lambda: printed('Training '))
      done = set(finalized_steps(workdir))
      wait_for(lambda: any(not d.isdigit() for d in os.listdir(ckpt_dir(workdir))) or
               not set(finalized_steps(workdir)) <= done)
    assert proc.poll() is None, f'the run ended ({proc.returncode}) before its {moment} kill'
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait(timeout=60)
  with open(log_path) as f:
    return f.read()


@pytest.mark.slow
def test_sigkill_at_ten_seeded_moments_resumes_bit_identical(tmp_path, env):
  """Ten SIGKILLs (start-up, compile, mid-step, mid-checkpoint), each followed by the same
  command: the final state and every logged train/eval scalar equal an uninterrupted run's."""
  reference = str(tmp_path / 'uninterrupted')
  finish(start(reference, env, *KILL_ARGS))
  workdir = str(tmp_path / 'killed')
  unfinished_saves = 0
  for k, (moment, delay) in enumerate(zip(MOMENTS, DELAYS)):
    out = _kill_at(moment, delay, workdir, env, tmp_path / f'kill{k}.log')
    assert 'Finished' not in out, f'kill {k} ({moment}) came after the run finished'
    if moment == 'mid-checkpoint':
      unfinished_saves += any(not d.isdigit() for d in os.listdir(ckpt_dir(workdir)))
  assert max(finalized_steps(workdir) or [0]) < KILL_STEPS
  assert unfinished_saves, 'no mid-checkpoint kill interrupted a save'
  finish(start(workdir, env, *KILL_ARGS))
  step, state, position = restore(workdir)
  ref_step, ref_state, ref_position = restore(reference)
  assert step == ref_step == KILL_STEPS and position == ref_position
  flat, ref_flat = (jax.tree_util.tree_flatten_with_path(s)[0] for s in (state, ref_state))
  assert [p for p, _ in flat] == [p for p, _ in ref_flat]
  for (path, x), (_, y) in zip(flat, ref_flat):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  got, ref = _logged(workdir), _logged(reference)
  assert sorted(ref['eval/loss']) == list(range(KILL_EVAL_EVERY, KILL_STEPS + 1, KILL_EVAL_EVERY))
  assert sorted(ref['train/loss']) == list(range(1, KILL_STEPS + 1))
  assert got == ref
