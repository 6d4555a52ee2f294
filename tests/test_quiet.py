"""transformer/quiet.py: environment defaults that a user's own setting wins over, and a logger
filter that drops TFDS's chatter while every other record (orbax's warnings, errors) still shows."""

import logging
import os
import subprocess
import sys

import pytest

from absl import logging as absl_logging

from transformer import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(level, pathname):
  return logging.LogRecord('absl', level, pathname, 1, 'message', None, None)


def test_tfds_records_below_error_are_dropped_and_others_kept():
  tfds = os.path.join(os.sep, 'venv', 'site-packages', 'tensorflow_datasets', 'core', 'x.py')
  orbax = os.path.join(os.sep, 'venv', 'site-packages', 'orbax', 'checkpoint', 'y.py')
  keep = absl_logging.get_absl_logger().filter
  assert not keep(_record(logging.WARNING, tfds))
  assert not keep(_record(logging.INFO, tfds))
  assert keep(_record(logging.ERROR, tfds))
  assert keep(_record(logging.WARNING, orbax))


def test_environment_defaults_yield_to_the_users():
  code = ('import os; from transformer import quiet; '
          'print(os.environ["TF_CPP_MIN_LOG_LEVEL"], os.environ["TF_ENABLE_ONEDNN_OPTS"])')
  env = {k: v for k, v in os.environ.items() if not k.startswith('TF_')}
  default = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                           capture_output=True, check=True).stdout.split()
  assert default == [quiet.ENVIRONMENT['TF_CPP_MIN_LOG_LEVEL'],
                     quiet.ENVIRONMENT['TF_ENABLE_ONEDNN_OPTS']]
  mine = subprocess.run([sys.executable, '-c', code], cwd=REPO, text=True, capture_output=True,
                        check=True, env={**env, 'TF_CPP_MIN_LOG_LEVEL': '0'}).stdout.split()
  assert mine[0] == '0'


def test_tensorflow_starts_without_keras_or_scikit_learn():
  """TensorFlow's eager Keras load (Keras 3 and scikit-learn, ~1.4 s of CPU) is skipped in every
  entry point's process, and tf.data, which the pipelines use, still works."""
  code = ('from transformer import quiet; import tensorflow as tf, sys; '
          'print(sum(tf.data.Dataset.range(4).as_numpy_iterator()), '
          'any(m.split(".")[0] in ("keras", "sklearn") for m in sys.modules))')
  env = {k: v for k, v in os.environ.items() if not k.startswith('TF_')}
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                        capture_output=True, check=True)
  assert proc.stdout.split() == ['6', 'False'], proc.stderr


def test_a_host_without_accelerators_starts_only_the_cpu_backend():
  """With libtpu installed (requirements-plan.txt) jax would load the TPU runtime at its first
  device query and print libtpu's metadata warnings; a run on a host with no accelerator keeps
  to the CPU backend (only plan mode loads libtpu, through training/topologies.py)."""
  if quiet.has_accelerator():
    pytest.skip('this host has an accelerator: jax chooses its backends itself')
  code = ('from transformer import quiet; import jax; jax.devices(); '
          'print(any("libtpu.so" in line for line in open("/proc/self/maps")))')
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                        capture_output=True, check=True)
  assert proc.stdout.split() == ['False']
  assert 'TPU' not in proc.stderr, proc.stderr
