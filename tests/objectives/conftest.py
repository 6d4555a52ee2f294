"""Fixtures for the objective tests: a fake tokenizer, configs, fake models, a fake decoder.

The fakes stand in for transformer.data (tokenizer), transformer.models and transformer.models.decoding
so the objectives can be tested on their own: losses against hand computations, masking
statistics, layouts.
"""

import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from configs import common

VOCAB = 100


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: slower tests, deselect with -m "not slow"')
SENTINELS = list(range(7, 39))
FIRST_ORDINARY = 39


class FakeTokenizer:
  """The tokenizer contract with fixed ids: 0 pad, 1 eos, 2 unk, 3 bos, 4 mask, 5 sep, 6 cls,
  7..38 sentinels, 39..99 ordinary tokens written 'tN'."""

  vocab_size = VOCAB
  pad_id, eos_id, unk_id, bos_id = 0, 1, 2, 3
  mask_id, sep_id, cls_id = 4, 5, 6
  sentinel_ids = SENTINELS

  def encode(self, text):
    return [int(w[1:]) for w in text.split()]

  def decode(self, ids):
    out = []
    for i in ids:
      if i == self.eos_id:
        break
      if i != self.pad_id:
        out.append(f't{int(i)}')
    return ' '.join(out)


@pytest.fixture
def tokenizer():
  return FakeTokenizer()


@pytest.fixture
def make_config():
  """make_config(objective, family, **data_overrides) -> a base ConfigDict."""

  def make(objective, family, **data):
    c = common.base_config()
    c.objective = objective
    c.model.family = family
    c.model.vocab_size = VOCAB
    for k, v in data.items():
      c.data[k] = v
    return c

  return make


class TableModel:
  """A fake network: logits[b, i] = table[tokens[b, i]] (+ the decoder input for enc-dec).

  Records the keyword arguments of its last call so tests can check what the objective passed.
  """

  def __init__(self, table):
    self.table = jnp.asarray(table)
    self.calls = []

  def __call__(self, tokens, *args, **kwargs):
    self.calls.append((args, kwargs))
    if args and args[0] is not None and np.ndim(args[0]) == 2 and 'inputs_segment_ids' in kwargs:
      return self.table[args[0]]  # encoder-decoder: score the decoder inputs
    return self.table[tokens]


@pytest.fixture
def table():
  return np.random.default_rng(0).normal(size=(VOCAB, VOCAB)).astype(np.float32)


@pytest.fixture
def table_model(table):
  return TableModel(table)


@pytest.fixture
def fake_decoding(monkeypatch):
  """Installs a fake transformer.models.decoding whose generate* return fixed ids; records calls."""
  calls = []

  def generate(model, prompt, *, max_new_tokens, eos_id, prefix_lm=False, **kwargs):
    calls.append(dict(fn='generate', prompt=np.asarray(prompt), prefix_lm=prefix_lm, **kwargs))
    b = np.shape(prompt)[0]
    return np.tile(np.arange(50, 50 + max_new_tokens, dtype=np.int32), (b, 1))

  def generate_seq2seq(model, inputs, inputs_segment_ids, *, max_new_tokens, eos_id, **kwargs):
    calls.append(dict(fn='generate_seq2seq', inputs=np.asarray(inputs),
                      segs=np.asarray(inputs_segment_ids), **kwargs))
    b = np.shape(inputs)[0]
    out = np.tile(np.arange(60, 60 + max_new_tokens, dtype=np.int32), (b, 1))
    out[:, -1] = eos_id
    return out

  module = types.ModuleType('transformer.models.decoding')
  module.generate = generate
  module.generate_seq2seq = generate_seq2seq
  import transformer.models  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, 'transformer.models.decoding', module)
  monkeypatch.setattr(transformer.models, 'decoding', module, raising=False)
  return calls


def pack(examples, length, stream):
  """A tiny packer: examples (dicts of 1-D arrays) laid one after another into rows of `length`."""
  rows = []
  row = None
  for ex in examples:
    n = len(ex[stream])
    if row is None or row['used'] + n > length:
      row = dict(used=0, seg=0, arrays={}, )
      rows.append(row)
    row['seg'] += 1
    for key, arr in ex.items():
      if not key.startswith(stream):
        continue
      row['arrays'].setdefault(key, np.zeros(length, np.int32))[row['used']:row['used'] + n] = arr
    row['arrays'].setdefault(f'{stream}_segment_ids', np.zeros(length, np.int32))[
        row['used']:row['used'] + n] = row['seg']
    row['arrays'].setdefault(f'{stream}_positions', np.zeros(length, np.int32))[
        row['used']:row['used'] + n] = np.arange(n)
    row['used'] += n
  return {k: np.stack([r['arrays'][k] for r in rows]) for k in rows[0]['arrays']}


@pytest.fixture
def packer():
  return pack
