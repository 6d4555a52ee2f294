"""Test setup: CPU only, TensorFlow kept off any GPU (pytest.ini puts the repo root on the path)."""

import os

os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import tempfile

# Embedded corpora and tokenizers are prepared once per machine for the tests, outside $HOME.
os.environ.setdefault('TFDS_DATA_DIR', os.path.join(tempfile.gettempdir(), 'transformer_tests_tfds'))


import pytest  # noqa: E402


@pytest.fixture
def corrupt_checkpoint():
  """A function that truncates every array file of one orbax step directory's state."""
  def corrupt(step_dir):
    damaged = 0
    for root, _, files in os.walk(os.path.join(step_dir, 'state')):
      for name in files:
        if name.startswith(('_', 'commit')) or name.endswith('.txt'):
          continue
        with open(os.path.join(root, name), 'r+b') as f:
          f.truncate(3)
        damaged += 1
    assert damaged, f'no array files under {step_dir}/state'
  return corrupt
