"""Device mesh and logical-axis sharding.

Every parameter carries logical axis names (layers.logical_param); a short rule list maps them
onto the mesh axes ('data', 'fsdp', 'tensor'). The rules come from a preset (`mesh.preset`) plus
optional extra rules (`mesh.rules`, pairs like ('mlp', 'tensor') that override the preset). The
trainer initialises straight into the resulting shardings (`jax.jit(init, out_shardings=...)`)
and turns host batches into global arrays with `jax.make_array_from_process_local_data`, so the
same code is right on one host and many.

The logical axis 'batch' (default: over data and fsdp) is a rule like the others: the global
batch is built and the steps' input declared in its layout (`input_sharding`), and the steps
lay every micro-batch out as it says (`step_batch_sharding`), so a step spends no collective on
its input. (Several processes keep data x fsdp unless the rule splits over both: each process
feeds its own rows.)

Mistakes are caught before anything is compiled, each as one ConfigError line naming the
parameter or rule: a rule that matches no parameter, two rules for one logical axis, one mesh
axis used twice in a parameter, a dimension that does not divide its mesh axes.
"""

import math

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from transformer.errors import ConfigError
from transformer.models import path_name

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH = ('data', 'fsdp')  # the batch is split over every data-like axis
_TENSOR = [('heads', 'tensor'), ('kv_heads', 'tensor'), ('mlp', 'tensor'), ('vocab', 'tensor')]
_FSDP = [('embed', 'fsdp')]
# Expert parallelism (GShard, Switch): the experts of a MoE layer split over the data axis, each
# device holding E / data of them; the tokens (batch over data) reach them through the
# all-to-all XLA puts around the dispatch and combine einsums (models/moe.py).
_EXPERT = [('expert', 'data')]
PRESETS = {
    'data': [],
    'fsdp': _FSDP,
    'tensor': _TENSOR,
    'fsdp_tensor': _FSDP + _TENSOR,
    'data_tensor': _TENSOR,
    'expert': _EXPERT,
    'expert_tensor': _EXPERT + _TENSOR,
}


def rules(preset, extra=()):
  """Logical axis -> mesh axes rules: 'batch' over data and fsdp, the preset, then `extra`.

  An `extra` rule replaces the preset's rule for the same logical axis; a mesh target of None
  (or '') keeps that axis replicated. Two `extra` rules for one logical axis are an error.
  """
  if preset not in PRESETS:
    raise ConfigError(f'`mesh.preset={preset!r}`: not a preset; choose one of '
                      f'{", ".join(PRESETS)}')
  table = dict([('batch', BATCH)] + PRESETS[preset])
  seen = {}
  for rule in extra:
    if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
      raise ConfigError(f'`mesh.rules`: entry {rule!r} is not a (logical_axis, mesh_axis) pair; '
                        "write e.g. mesh.rules=(('mlp', 'tensor'),)")
    name, target = rule[0], _normalise_target(rule[1])
    if name in seen and seen[name] != target:
      raise ConfigError(f'`mesh.rules`: maps logical axis {name!r} twice ({seen[name]} and '
                        f'{target}); keep one rule per logical axis')
    seen[name] = table[name] = target
  return list(table.items())


def _normalise_target(target):
  """'tensor' | ('data', 'fsdp') | None -> a mesh axis, a tuple of them, or None (checked)."""
  if target in (None, '', ()):
    return None
  axes = (target,) if isinstance(target, str) else tuple(target)
  for axis in axes:
    if axis not in MESH_AXES:
      raise ConfigError(f'`mesh.rules`: target {axis!r} is not a mesh axis; use one of '
                        f'{", ".join(MESH_AXES)}')
  if len(set(axes)) != len(axes):
    raise ConfigError(f'`mesh.rules`: target {target!r} repeats a mesh axis; name each mesh axis once')
  return axes[0] if len(axes) == 1 else axes


def config_rules(config_mesh):
  """The rule list of a config's mesh section (`preset` plus optional `rules`)."""
  return rules(config_mesh.preset, tuple(config_mesh.rules))


def mesh_shape(shape, device_count):
  """Fill the one -1 in (data, fsdp, tensor) from the device count; errors name both."""
  shape = list(shape)
  if len(shape) != len(MESH_AXES) or any(s == 0 or s < -1 for s in shape) or shape.count(-1) > 1:
    raise ConfigError(f'`mesh.shape={tuple(shape)}`: not a mesh shape; give {len(MESH_AXES)} '
                      f'positive sizes for {MESH_AXES}, at most one of them -1')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if device_count % known:
      raise ConfigError(f'`mesh.shape={tuple(shape)}`: cannot be filled from {device_count} devices; '
                        f'the fixed sizes ({known}) must divide the device count')
    shape[shape.index(-1)] = device_count // known
  if math.prod(shape) != device_count:
    raise ConfigError(f'`mesh.shape={tuple(shape)}`: needs {math.prod(shape)} devices but there are '
                      f'{device_count}; use -1 for one axis to fill it in')
  return tuple(shape)


def make_mesh(config_mesh, devices=None):
  """A mesh over all devices (every process's) shaped by `mesh.shape`; over several TPU slices
  the data axis spans them (DCN) and the rest stays inside each slice (ICI)."""
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(config_mesh.shape, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  slices = len({getattr(d, 'slice_index', None) or 0 for d in devices})
  if slices == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  if shape[0] % slices:
    raise ConfigError(f'mesh.shape={shape}: the data axis ({shape[0]}) must be a multiple of '
                      f'the {slices} slices (between slices only the data axis travels, over '
                      f'DCN); e.g. --config.mesh.shape="({slices},-1,1)"')
  grid = mesh_utils.create_hybrid_device_mesh((shape[0] // slices,) + shape[1:],
                                              (slices, 1, 1), devices=devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def logical_to_spec(logical_axes, rule_list, path='a parameter'):
  """('embed', 'mlp') -> PartitionSpec under `rule_list` (or a preset name); unmatched names
  replicate. A mesh axis may shard only one dimension of a parameter."""
  if isinstance(rule_list, str):
    rule_list = rules(rule_list)
  table = dict(rule_list)
  spec = [table.get(name) for name in logical_axes]
  used = [a for axes in spec if axes is not None for a in _as_tuple(axes)]
  if len(used) != len(set(used)):
    raise ConfigError(f'{path}: logical axes {tuple(logical_axes)} map to mesh axes {spec}, '
                      'which use one mesh axis twice; change mesh.rules or mesh.preset')
  return PartitionSpec(*spec)


def _as_tuple(axes):
  return axes if isinstance(axes, tuple) else (axes,)


def _variables(abstract_state):
  is_var = lambda x: isinstance(x, nnx.Variable)
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state, is_leaf=is_var)[0]
  return [(path_name(p), v) for p, v in leaves if is_var(v)]


def param_shardings(abstract_state, mesh, rule_list, extra_rules=None):
  """NamedShardings for an nnx State of Params, from their logical axis names and the rules.

  `rule_list` is a preset name or the output of `rules()` / `config_rules()`. When
  `extra_rules` (the user's `mesh.rules`) is given, each of them must match some parameter.
  """
  if isinstance(rule_list, str):
    rule_list = rules(rule_list, extra_rules or ())
  variables = _variables(abstract_state)
  used = {name for _, v in variables for name in (v.get_metadata().get('out_sharding') or ())}
  for rule in extra_rules or ():
    if rule[0] not in used and rule[0] != 'batch':
      raise ConfigError(f'`mesh.rules`: rule {tuple(rule)!r} matches no parameter; logical axes in '
                        f'this model: {", ".join(sorted(used))}')
  by_id = {}
  for path, var in variables:
    axes = var.get_metadata().get('out_sharding') or ()
    shape = var.get_value().shape
    if len(axes) != len(shape):
      raise ConfigError(f'{path}: {len(axes)} logical axes {tuple(axes)} for shape {shape}')
    spec = logical_to_spec(axes, rule_list, path)
    _check_divides(path, shape, axes, spec, mesh)
    by_id[id(var)] = NamedSharding(mesh, spec)
  return jax.tree.map(lambda v: by_id[id(v)], abstract_state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))


def _check_divides(path, shape, logical_axes, spec, mesh):
  for dim, name, axes in zip(shape, logical_axes, spec):
    if axes is None:
      continue
    size = math.prod(mesh.shape[a] for a in _as_tuple(axes))
    if dim % size:
      raise ConfigError(f'{path}: dimension {name}={dim} of shape {shape} cannot be split {size} '
                        f'ways over mesh axes {axes}; change mesh.shape, mesh.preset or '
                        f'mesh.rules (e.g. (\'{name}\', None))')


def sharding_table(abstract_state, shardings):
  """A text table: parameter path, shape, logical axes, partition spec, per-device shard shape."""
  rows = [('parameter', 'shape', 'logical axes', 'mesh axes', 'per device')]
  flat_shardings = dict(_flat(shardings))
  for path, var in _variables(abstract_state):
    shape = var.get_value().shape
    s = flat_shardings[path]
    rows.append((path, str(tuple(shape)), str(tuple(var.get_metadata().get('out_sharding') or ())),
                 str(tuple(s.spec)), str(s.shard_shape(shape))))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _flat(tree):
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, (NamedSharding, nnx.Variable)))[0]
  return [(path_name(p), v.get_value() if isinstance(v, nnx.Variable) else v) for p, v in leaves]


def batch_sharding(mesh):
  """How `global_batch` loads rows: split over data x fsdp, each process holding its own."""
  return NamedSharding(mesh, PartitionSpec(BATCH))


def step_batch_sharding(mesh, config_mesh, rows, accumulation_steps=1):
  """The sharding the jitted steps give each (micro-)batch of `rows` rows: the batch dimension
  over the mesh axes of the 'batch' rule. None when the default rule cannot split `rows` (the
  steps then keep XLA's layout); a user rule that cannot is a ConfigError."""
  extra = tuple(config_mesh.rules)
  axes = dict(rules(config_mesh.preset, extra))['batch']
  n = math.prod(mesh.shape[a] for a in _as_tuple(axes)) if axes else 1
  if rows % n == 0:
    return NamedSharding(mesh, PartitionSpec(axes))
  if not any(rule[0] == 'batch' for rule in extra):
    return None
  what = (f'micro-batches of {rows} rows (train.batch_size={rows * accumulation_steps} / '
          f'opt.accumulation_steps={accumulation_steps})' if accumulation_steps > 1 else
          f'train.batch_size={rows} rows')
  raise ConfigError(f"`mesh.rules`: rule ('batch', {axes!r}): {what} do not split over the {n} "
                    f'devices of mesh axes {axes!r}; change the rule, mesh.shape or the batch size')


def global_batch(local_batch, mesh, layout=None):
  """Host-local numpy batch -> global jax.Arrays laid out as `layout` (a NamedSharding of the
  batch dimension: `input_sharding`), by default split over the data axes.

  Each process passes only its own rows (its slice of the global batch, in process order); the
  global batch size must divide by the product of the data axes.
  """
  sharding = layout or batch_sharding(mesh)
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    check_rows(v.shape[0] * jax.process_count(), mesh, sharding)
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def input_sharding(mesh, config_mesh, rows):
  """The layout a step's batch of `rows` rows is built and declared in: the 'batch' rule's own
  (`step_batch_sharding`), so the step starts without laying it out again; the data x fsdp
  split where the rule cannot split `rows`, or where it would have processes share rows
  (several processes each feed their own rows, so the rule must split over data and fsdp)."""
  rule = step_batch_sharding(mesh, config_mesh, rows)
  axes = rule.spec[0] if rule is not None else None
  covers = set(BATCH) <= set(axes if isinstance(axes, tuple) else (axes,))
  return rule if rule is not None and (jax.process_count() == 1 or covers) else (
      batch_sharding(mesh))


def check_rows(rows, mesh, layout=None):
  """ConfigError unless a global batch of `rows` rows splits over the data axes (or the axes
  of `layout`)."""
  axes = BATCH if layout is None else (layout.spec[0] if layout.spec else None)
  n = math.prod(mesh.shape[a] for a in _as_tuple(axes)) if axes else 1
  if rows % n:
    raise ConfigError(f'`train.batch_size={rows}`: does not divide over the {n} data-parallel '
                      f'devices of mesh.shape={tuple(mesh.shape.values())}; use a multiple of {n}')


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def like_params(abstract_tree, params_shardings, mesh):
  """Shardings for a tree that holds copies of the params (optimizer moments) and other leaves.

  A leaf whose path ends with a parameter's path and has that parameter's shape gets the
  parameter's sharding (Adam's mu and nu); everything else (step counts, factored Adafactor
  statistics) is replicated. Without this, leaves that do not depend on the params (zeros,
  counters) would land whole on device 0.
  """
  by_path = {}
  for path, s in jax.tree_util.tree_flatten_with_path(params_shardings)[0]:
    by_path[tuple(str(k) for k in path)] = s
  rep = replicated(mesh)

  def pick(path, leaf):
    keys = tuple(str(k) for k in path)
    for n in range(len(keys), 0, -1):
      s = by_path.get(keys[-n:])
      if s is not None:
        return s if _fits(leaf.shape, s) else rep
    return rep
  return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def _fits(shape, s):
  """Same rank as the parameter's spec, and every sharded dimension divides its mesh axes."""
  if len(shape) != len(s.spec):
    return False
  return all(axes is None or dim % math.prod(s.mesh.shape[a] for a in _as_tuple(axes)) == 0
             for dim, axes in zip(shape, s.spec))
