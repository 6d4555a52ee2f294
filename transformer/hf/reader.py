"""Reads a local Hugging Face checkpoint directory: config.json plus its weight files.

Weights come from (first found) model.safetensors, sharded *.safetensors with
model.safetensors.index.json, pytorch_model.bin, or sharded pytorch_model-*.bin with
pytorch_model.bin.index.json. Everything is read into host numpy arrays; torch is never imported
(see torch_pickle.py for the .bin format).
"""

import os

import numpy as np
from safetensors import safe_open

from transformer.data import hf_files
from transformer.errors import ConfigError
from transformer.hf import torch_pickle

SAFETENSORS, SAFETENSORS_INDEX = 'model.safetensors', 'model.safetensors.index.json'
TORCH_BIN, TORCH_BIN_INDEX = 'pytorch_model.bin', 'pytorch_model.bin.index.json'


def read_config(path) -> dict:
  """The parsed config.json of checkpoint directory `path`."""
  if not os.path.isdir(path):
    raise ConfigError(f'{path}: not a directory; give a local Hugging Face checkpoint directory '
                      '(config.json + model.safetensors or pytorch_model.bin)')
  filename = os.path.join(path, 'config.json')
  if not os.path.isfile(filename):
    raise ConfigError(f'{filename}: missing; a Hugging Face checkpoint directory needs its '
                      'config.json')
  return hf_files.read_json(filename)


def _read_safetensors(filename) -> dict:
  tensors = {}
  with hf_files.reading(filename, 'safetensors', 'truncated? download or save it again'):
    with safe_open(filename, framework='np') as f:
      for name in f.keys():
        try:
          tensors[name] = f.get_tensor(name)
        except TypeError:  # bfloat16: numpy has no such dtype, jax (ml_dtypes) does
          with safe_open(filename, framework='flax') as g:
            tensors[name] = np.asarray(g.get_tensor(name))
  return tensors


def _shards(path, index_name):
  filename = os.path.join(path, index_name)
  weight_map = hf_files.read_json(filename).child('weight_map')
  shards = sorted({weight_map.require(name, str) for name in weight_map})
  if not shards:
    raise ConfigError(f'{filename}: "weight_map" is missing or empty; a shard index maps each '
                      'tensor name to its shard file')
  for shard in shards:
    if not os.path.isfile(os.path.join(path, shard)):
      raise ConfigError(f'{filename}: names shard {shard}, which is not in {path}')
  return [os.path.join(path, s) for s in shards]


def read_weights(path) -> tuple[dict, str]:
  """All tensors of checkpoint directory `path` -> ({name: np.ndarray}, label of the files)."""
  exists = lambda name: os.path.isfile(os.path.join(path, name))
  if exists(SAFETENSORS):
    return _read_safetensors(os.path.join(path, SAFETENSORS)), os.path.join(path, SAFETENSORS)
  if exists(SAFETENSORS_INDEX):
    files, reader = _shards(path, SAFETENSORS_INDEX), _read_safetensors
  elif exists(TORCH_BIN):
    return torch_pickle.load(os.path.join(path, TORCH_BIN)), os.path.join(path, TORCH_BIN)
  elif exists(TORCH_BIN_INDEX):
    files, reader = _shards(path, TORCH_BIN_INDEX), torch_pickle.load
  else:
    raise ConfigError(f'{path}: no weights file; expected {SAFETENSORS}, {SAFETENSORS_INDEX}, '
                      f'{TORCH_BIN} or {TORCH_BIN_INDEX}')
  tensors = {}
  for filename in files:
    tensors.update(reader(filename))
  return tensors, os.path.join(path, '*' + os.path.splitext(files[0])[1])


class Weights:
  """Tensor lookup for the mapping functions: tries name prefixes, checks shapes, records use.

  `prefixes` are the optional leading scopes a checkpoint may or may not carry (e.g. 'bert.' for
  BertForMaskedLM vs BertModel files). Legacy TF-era names (LayerNorm.gamma/beta) are accepted.
  """

  def __init__(self, tensors: dict, label: str, prefixes=('',)):
    self.label, self.prefixes = label, tuple(prefixes)
    self.tensors = {}
    for name, value in tensors.items():
      name = name.replace('LayerNorm.gamma', 'LayerNorm.weight').replace(
          'LayerNorm.beta', 'LayerNorm.bias')
      self.tensors[name] = value
    self.used = set()

  def _find(self, name):
    for prefix in self.prefixes:
      if prefix + name in self.tensors:
        return prefix + name
    return None

  def has(self, name) -> bool:
    return self._find(name) is not None

  def get(self, name, shape, *, fallback=None) -> np.ndarray:
    """Tensor `name` (or `fallback` when absent); ConfigError when missing or not `shape`."""
    key = self._find(name)
    if key is None and fallback is not None:
      key = self._find(fallback)
    if key is None:
      scopes = ' or '.join(repr(p) for p in self.prefixes if p)
      where = f' (with or without the {scopes} scope)' if scopes else ''
      raise ConfigError(f'{self.label}: tensor {name!r} is missing{where}; is this checkpoint '
                        'the architecture its config.json names?')
    value = self.tensors[key]
    if tuple(value.shape) != tuple(shape):
      raise ConfigError(f'{self.label}: tensor {key!r} has shape {tuple(value.shape)} but '
                        f'config.json implies {tuple(shape)}')
    self.used.add(key)
    return value
