"""transformer/quiet.py: environment defaults that a user's own setting wins over, and a logger
filter that drops TFDS's chatter while every other record (orbax's warnings, errors) still shows."""

import logging
import os
import subprocess
import sys

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
