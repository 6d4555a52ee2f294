"""Reads a PyTorch `torch.save` zip file (e.g. pytorch_model.bin) into numpy arrays, without torch.

A zip-format torch file holds `<archive>/data.pkl`, a pickle of the state dict in which every
tensor is a call to `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and
every storage is a persistent id ('storage', <dtype>Storage, key, location, numel) naming the raw
little-endian bytes in `<archive>/data/<key>`. We unpickle with an allow-list: only those
rebuild functions, the storage types and OrderedDict resolve; anything else is refused, so a
checkpoint cannot run arbitrary code. Every view is checked against its storage before it is
built (offset, sizes and strides >= 0, the last element inside), so a crafted file can neither
read process memory into the weights nor crash the process; any malformed archive (missing
members, a broken pickle, unsupported types) is a one-line ConfigError naming the file.
"""

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

from transformer.data import hf_files
from transformer.errors import ConfigError

STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _StorageType:
  """Stands in for torch.<X>Storage inside the pickle: only its element dtype matters."""

  def __init__(self, name):
    self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _Malformed(Exception):
  """A structural defect of the archive; load() reports it as a ConfigError naming the file."""


def _check_view(storage, offset, size, stride):
  """Raises _Malformed unless the strided view (in elements) lies inside the flat `storage`."""
  if not isinstance(storage, np.ndarray):
    raise _Malformed(f'a tensor rebuilt from {type(storage).__name__}, not a storage')
  if not all(type(v) is int for v in (offset, *size, *stride)) or len(size) != len(stride):
    raise _Malformed(f'tensor view offset={offset!r:.40} size={size!r:.60} stride={stride!r:.60} '
                     'is not integers of matching rank')
  if offset < 0 or any(v < 0 for v in (*size, *stride)):
    raise _Malformed(f'tensor view offset={offset} size={size} stride={stride} is negative')
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if 0 not in size and last >= storage.size or offset > storage.size:
    raise _Malformed(f'tensor view offset={offset} size={size} stride={stride} reaches element '
                     f'{last} of a storage of {storage.size}')


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2: a checked strided view of a flat storage, copied out."""
  size, stride = tuple(size), tuple(stride)
  _check_view(storage, offset, size, stride)
  if 0 in size:
    return np.zeros(size, storage.dtype)
  stride = tuple(0 if n == 1 else s for n, s in zip(size, stride))  # unused, may be any value
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride))
  return view.copy(order='C')   # own memory; keeps a 0-d scalar 0-d


def _rebuild_parameter(data, *unused):
  return data


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """An allow-list unpickler that turns torch storages into flat numpy arrays."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, filename: str):
    super().__init__(file)
    self.archive, self.prefix, self.filename = archive, prefix, filename
    self.members = set(archive.namelist())

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in STORAGE_DTYPES:
      return _StorageType(name)
    raise ConfigError(f'{self.filename}: refusing to unpickle {module}.{name}; only plain tensor '
                      'state dicts are read (re-save it with safetensors)')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise ConfigError(f'{self.filename}: unknown persistent id {pid!r:.60}; only tensor '
                        'storages are supported')
    if len(pid) < 3:
      raise _Malformed(f'storage id {pid!r:.60} names no data member')
    storage_type, name = pid[1], f'{self.prefix}/data/{pid[2]}'
    if not isinstance(storage_type, _StorageType):
      raise ConfigError(f'{self.filename}: unsupported storage type {storage_type!r}')
    if name not in self.members:
      raise _Malformed(f'the storage member {name} is missing')
    data = self.archive.read(name)
    if len(data) % storage_type.dtype.itemsize:
      raise _Malformed(f'{name} holds {len(data)} bytes, not whole {storage_type.name} elements')
    return np.frombuffer(data, dtype=storage_type.dtype)  # byteorder checked in load()


def load(filename) -> dict:
  """The state dict in a zip-format torch file: {name: np.ndarray}; ConfigError if malformed."""
  filename = str(filename)
  if not zipfile.is_zipfile(filename):
    raise ConfigError(f'{filename}: not a zip-format torch file (truncated, or the legacy '
                      'torch.save format); save it again with torch>=1.6 or as safetensors')
  with hf_files.reading(filename, 'a torch file', 're-save it with torch.save or as safetensors'):
    state = _unpickle(filename)   # anything an untrusted file can cause is one line
  if not isinstance(state, dict):
    raise ConfigError(f'{filename}: holds a {type(state).__name__}, not a state dict of tensors')
  # Unwrap {'state_dict': {...}} / {'model': {...}} wrappers some training scripts write.
  for wrapper in ('state_dict', 'model'):
    if set(state) == {wrapper} and isinstance(state[wrapper], dict):
      state = state[wrapper]
  return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _unpickle(filename):
  """The unpickled data.pkl of `filename` (a zip file), its storages read from the archive."""
  with zipfile.ZipFile(filename) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
    if not pickles:
      raise ConfigError(f'{filename}: no data.pkl inside; is this a torch.save file?')
    prefix = pickles[0].split('/')[0]
    order = f'{prefix}/byteorder'
    if order in archive.namelist() and archive.read(order).strip() != b'little':
      raise ConfigError(f'{filename}: big-endian torch files are not supported')
    with archive.open(pickles[0]) as f:
      return _Unpickler(f, archive, prefix, filename).load()
