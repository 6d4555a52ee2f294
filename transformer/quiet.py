"""Library start-up noise switched off at its source; every entry point imports this first.

Importing it (before TensorFlow, TFDS or JAX are imported) sets, unless already set:
  TF_CPP_MIN_LOG_LEVEL=3   TensorFlow's C++ INFO/WARNING lines (cpu_feature_guard, ...)
  TF_ENABLE_ONEDNN_OPTS=0  the 'oneDNN custom operations are on' line, and absl's 'All log
                           messages before absl::InitializeLog()' that it sets off. TensorFlow
                           only reads data here (tf.data, no float math), so nothing changes.
and keeps TFDS's absl log records below ERROR (dataset-folder and preparation chatter) from
being emitted. Every other log record and warning (orbax's, jax's, ours) still shows; a user who
wants the TensorFlow lines back sets the variables before starting.
"""

import logging
import os

from absl import logging as absl_logging   # pure Python: imports nothing of TF or JAX

ENVIRONMENT = {'TF_CPP_MIN_LOG_LEVEL': '3', 'TF_ENABLE_ONEDNN_OPTS': '0'}
_TFDS = f'{os.sep}tensorflow_datasets{os.sep}'


def _not_tfds_chatter(record):
  """False for a TFDS record below ERROR (a logger filter: the record is never emitted)."""
  return record.levelno >= logging.ERROR or _TFDS not in (record.pathname or '')


def apply():
  """Set the environment defaults and the absl logger's filter (idempotent)."""
  for key, value in ENVIRONMENT.items():
    os.environ.setdefault(key, value)
  absl_logger = absl_logging.get_absl_logger()   # TFDS logs through it
  if _not_tfds_chatter not in absl_logger.filters:
    absl_logger.addFilter(_not_tfds_chatter)


apply()
