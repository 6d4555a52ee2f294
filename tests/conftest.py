"""Test setup: CPU only, TensorFlow kept off any GPU, repo root importable."""

import os
import sys

os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tempfile  # noqa: E402

# Embedded corpora and tokenizers are prepared once per machine for the tests, outside $HOME.
os.environ.setdefault('TFDS_DATA_DIR', os.path.join(tempfile.gettempdir(), 'transformer_tests_tfds'))
