"""Device mesh and logical-axis sharding.

Every parameter carries logical axis names (layers.logical_param); a preset's short rule list maps
them onto the mesh axes ('data', 'fsdp', 'tensor'). The trainer initialises straight into those
shardings (`jax.jit(init, out_shardings=...)`) and turns host batches into global arrays with
`jax.make_array_from_process_local_data`, so the same code is right on one host and many.
"""

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from transformer.errors import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH = ('data', 'fsdp')  # the batch is split over every data-like axis
_TENSOR = [('heads', 'tensor'), ('kv_heads', 'tensor'), ('mlp', 'tensor'), ('vocab', 'tensor')]
_FSDP = [('embed', 'fsdp')]
PRESETS = {
    'data': [],
    'fsdp': _FSDP,
    'tensor': _TENSOR,
    'fsdp_tensor': _FSDP + _TENSOR,
    'data_tensor': _TENSOR,
}


def rules(preset):
  """Logical axis -> mesh axis rules of a preset ('batch' always goes over data and fsdp)."""
  return [('batch', BATCH)] + PRESETS[preset]


def mesh_shape(shape, device_count):
  """Fill the one -1 in (data, fsdp, tensor) from the device count; errors name both."""
  shape = list(shape)
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if device_count % known:
      raise ConfigError(f'mesh.shape={tuple(shape)} cannot be filled from {device_count} devices; '
                        f'the fixed sizes ({known}) must divide the device count')
    shape[shape.index(-1)] = device_count // known
  if math.prod(shape) != device_count:
    raise ConfigError(f'mesh.shape={tuple(shape)} needs {math.prod(shape)} devices but there are '
                      f'{device_count}; use -1 for one axis to fill it in')
  return tuple(shape)


def make_mesh(config_mesh, devices=None):
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(config_mesh.shape, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(logical_axes, preset):
  """('embed', 'mlp') -> PartitionSpec under the preset's rules; unmatched names replicate."""
  table = dict(rules(preset))
  return PartitionSpec(*(table.get(name) for name in logical_axes))


def param_shardings(abstract_state, mesh, preset):
  """NamedShardings for an nnx State of Params, from their logical axis names and the preset."""
  def to_sharding(var):
    spec = logical_to_spec(var.get_metadata().get('out_sharding') or (), preset)
    _check_divides(var.get_value().shape, spec, mesh)
    return NamedSharding(mesh, spec)
  return jax.tree.map(to_sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _check_divides(shape, spec, mesh):
  for dim, axes in zip(shape, spec):
    if axes is None:
      continue
    size = math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))
    if dim % size:
      raise ConfigError(f'a parameter of shape {shape} cannot be split {size} ways over mesh '
                        f'axes {axes}; change mesh.shape or mesh.preset')


def batch_sharding(mesh):
  return NamedSharding(mesh, PartitionSpec(BATCH))


def global_batch(local_batch, mesh):
  """Host-local numpy batch -> global jax.Arrays split over the data axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())
