"""A crafted or broken pytorch_model.bin is a one-line ConfigError naming the file: never leaked
process memory in the weights, never a SIGSEGV, never a traceback.

Each archive is written by hand (the same layout torch.save writes: <name>/data.pkl whose tensors
are _rebuild_tensor_v2 calls on persistent storage ids, raw bytes in <name>/data/<key>), so that
sizes, strides and offsets can lie about the storage behind them.
"""

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from transformer.errors import ConfigError
from transformer.hf import torch_pickle

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Storage:
  """A float32 storage of `numel` elements, saved under data/<key>."""

  def __init__(self, key, numel):
    self.key, self.numel = key, numel


class _Tensor:
  """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride, False, collections.OrderedDict())

  def __reduce__(self):
    return torch._utils._rebuild_tensor_v2, self.args  # pylint: disable=protected-access


class _Pickler(pickle.Pickler):

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):   # key None: a persistent id cut short
      return ('storage', torch.FloatStorage, obj.key, 'cpu', obj.numel)[:2 if obj.key is None else 5]
    return None


def _archive(filename, state=None, *, storages=None, pickled=None):
  """Writes a torch-layout zip: `state` pickled (or raw `pickled` bytes), `storages` {key: bytes}."""
  if pickled is None:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(state)
    pickled = buffer.getvalue()
  with zipfile.ZipFile(filename, 'w') as z:
    z.writestr('archive/data.pkl', pickled)
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')
    for key, data in (storages or {}).items():
      z.writestr(f'archive/data/{key}', data)
  return filename


FOUR_FLOATS = {'0': np.arange(4, dtype=np.float32).tobytes()}


def _tensor_file(tmp_path, offset, size, stride):
  state = collections.OrderedDict(w=_Tensor(_Storage('0', 4), offset, size, stride))
  return _archive(tmp_path / 'pytorch_model.bin', state, storages=FOUR_FLOATS)


def _one_line(excinfo, *needles):
  message = str(excinfo.value)
  assert '\n' not in message, message
  for needle in needles:
    assert needle in message, message


def test_the_hand_written_archive_is_read_like_torch(tmp_path):
  """The crafting helper is faithful: a valid strided view reads back as torch reads it."""
  filename = _tensor_file(tmp_path, 1, (3,), (1,))
  np.testing.assert_array_equal(torch_pickle.load(filename)['w'], [1, 2, 3])
  np.testing.assert_array_equal(torch.load(filename, weights_only=True)['w'].numpy(), [1, 2, 3])
  filename = _tensor_file(tmp_path, 0, (2, 2), (1, 2))
  np.testing.assert_array_equal(torch_pickle.load(filename)['w'], [[0, 2], [1, 3]])


@pytest.mark.parametrize('offset, size, stride', [
    (0, (4096,), (1,)),          # reads 4092 floats of process memory past the storage
    (3, (2,), (1,)),             # one past the end
    (0, (2, 3), (3, 1)),         # 2-D: last element 5 of 4
    (-1, (1,), (1,)),            # negative offset: numpy would wrap to the storage's end
    (0, (-2,), (1,)),
    (0, (2,), (-1,)),
    (0, (2,), (1, 1)),           # rank of size and stride differ
    (4, (), ()),                 # a scalar past the end
    (0, ('2',), (1,)),           # not integers
])
def test_views_outside_the_storage_are_refused(tmp_path, offset, size, stride):
  with pytest.raises(ConfigError) as e:
    torch_pickle.load(_tensor_file(tmp_path, offset, size, stride))
  _one_line(e, 'pytorch_model.bin')


def test_empty_and_size_one_dimensions_still_load(tmp_path):
  """Legal views at the edges: an empty tensor, and a size-1 dimension whose stride is unused."""
  assert torch_pickle.load(_tensor_file(tmp_path, 4, (0, 3), (3, 1)))['w'].shape == (0, 3)
  loaded = torch_pickle.load(_tensor_file(tmp_path, 2, (1, 2), (1 << 40, 1)))['w']
  np.testing.assert_array_equal(loaded, [[2, 3]])


@pytest.mark.parametrize('name, write', [
    ('missing storage member', lambda f: _archive(
        f, {'w': _Tensor(_Storage('7', 4), 0, (4,), (1,))}, storages=FOUR_FLOATS)),
    ('garbage pickle', lambda f: _archive(f, pickled=b'\x80\x02this is not a pickle')),
    ('truncated pickle', lambda f: _archive(f, pickled=pickle.dumps({'a': 1}, 2)[:-3])),
    ('storage bytes not whole floats', lambda f: _archive(
        f, {'w': _Tensor(_Storage('0', 1), 0, (1,), (1,))}, storages={'0': b'\x00' * 5})),
    ('short persistent id', lambda f: _archive(f, {'w': _Storage(None, 0)})),
    ('not a zip at all', lambda f: f.write_bytes(b'PK\x03\x04 truncated zip header')),
])
def test_malformed_archives_are_one_line_errors(tmp_path, name, write):
  filename = tmp_path / 'pytorch_model.bin'
  write(filename)
  with pytest.raises(ConfigError) as e:
    torch_pickle.load(filename)
  _one_line(e, 'pytorch_model.bin')
  del name


def _import_cli(hf_dir, out):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'transformer.import_hf', '--from', str(hf_dir),
                         '--workdir', str(out)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


@pytest.mark.parametrize('stride', [1 << 40, -(1 << 40)])
def test_huge_strides_cannot_crash_the_import(tmp_path, stride):
  """In a subprocess: before the fix this view made the reader segfault (rc -11)."""
  hf_dir = tmp_path / 'hf'
  transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=61, n_embd=12, n_layer=1, n_head=3, n_positions=16)).save_pretrained(hf_dir)
  os.remove(hf_dir / 'model.safetensors')
  state = {'transformer.wte.weight': _Tensor(_Storage('0', 4), 0, (2,), (stride,))}
  _archive(hf_dir / 'pytorch_model.bin', state, storages=FOUR_FLOATS)
  proc = _import_cli(hf_dir, tmp_path / 'out')
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  err = proc.stderr.strip()
  assert err.startswith('error: ') and '\n' not in err and 'pytorch_model.bin' in err, err
  assert not (tmp_path / 'out').exists()
  json.loads((hf_dir / 'config.json').read_text())   # the input is left as it was
