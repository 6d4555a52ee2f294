"""Library start-up noise (and dead weight) switched off at its source; every entry point
imports this first.

Importing it (before TensorFlow, TFDS or JAX are imported) sets, unless already set:
  TF_CPP_MIN_LOG_LEVEL=3   TensorFlow's C++ INFO/WARNING lines (cpu_feature_guard, ...)
  TF_ENABLE_ONEDNN_OPTS=0  the 'oneDNN custom operations are on' line, and absl's 'All log
                           messages before absl::InitializeLog()' that it sets off. TensorFlow
                           only reads data here (tf.data, no float math), so nothing changes.
  TF_USE_LEGACY_KERAS=1    `import tensorflow` otherwise eagerly imports Keras 3's optimizers,
                           which pull in Keras and scikit-learn (~600 modules, 1.4 s of CPU per
                           process, measured); with it TensorFlow tries the `tf_keras` package
                           instead, which is not installed, and skips the load. Nothing here
                           uses `tf.keras`; in a process that imported this module it is not
                           available unless `tf_keras` is installed or the variable is set to 0.
and, on a host with no accelerator (no TPU or NVIDIA/AMD GPU device), JAX_PLATFORMS=cpu: with
libtpu installed (requirements-plan.txt, for `plan`) jax would otherwise load the TPU runtime at
its first device query, which prints libtpu's metadata warnings and finds no chip; plan loads it
itself (training/topologies.py). It keeps TFDS's absl log records below ERROR (dataset-folder and
preparation chatter) from being emitted. Every other log record and warning (orbax's, jax's,
ours) still shows; a user who wants the TensorFlow lines back sets the variables before starting.
"""

import glob
import logging
import os

from absl import logging as absl_logging   # pure Python: imports nothing of TF or JAX

ENVIRONMENT = {'TF_CPP_MIN_LOG_LEVEL': '3', 'TF_ENABLE_ONEDNN_OPTS': '0',
               'TF_USE_LEGACY_KERAS': '1'}
_TFDS = f'{os.sep}tensorflow_datasets{os.sep}'


def _not_tfds_chatter(record):
  """False for a TFDS record below ERROR (a logger filter: the record is never emitted)."""
  return record.levelno >= logging.ERROR or _TFDS not in (record.pathname or '')


_GPU_DEVICES = ('/dev/nvidia0', '/dev/nvidiactl', '/dev/dxg', '/dev/kfd')
_GOOGLE_PCI_VENDOR = '0x1ae0'   # TPU chips


def has_accelerator():
  """A GPU device node or a Google (TPU) PCI device on this host (what jax itself checks)."""
  if any(os.path.exists(d) for d in _GPU_DEVICES):
    return True
  for vendor in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(vendor) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def apply():
  """Set the environment defaults and the absl logger's filter (idempotent)."""
  for key, value in ENVIRONMENT.items():
    os.environ.setdefault(key, value)
  if 'JAX_PLATFORMS' not in os.environ and not has_accelerator():
    os.environ['JAX_PLATFORMS'] = 'cpu'
  absl_logger = absl_logging.get_absl_logger()   # TFDS logs through it
  if _not_tfds_chatter not in absl_logger.filters:
    absl_logger.addFilter(_not_tfds_chatter)


apply()
