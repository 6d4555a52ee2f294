"""Checkpoints: orbax CheckpointManager around the train state, data position and model fingerprint.

One step directory `<directory>/<step>/` holds three orbax items:
  state          the train-state pytree (params, optimizer state, step), possibly sharded
  data_position  JSON: where the data iterator stands, so a resumed run sees no example twice
  fingerprint    JSON: a small description of the model (config + parameter shapes), so that a
                 workdir holding another model's checkpoints is refused instead of half-loaded;
                 under 'settings', the run's settings a resume must keep (`ORDER_KEYS`: the data
                 positions index into the order they define) or whose change it must explain
                 (`opt.*`: they shape the optimizer state)

Resume (`Checkpointer.restore`) and init-from-pretrained (`load_pretrained`) are separate paths:
the first brings back everything bit-exact, the second only the parameters that fit the new model.
"""

import json
import logging
import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

from transformer.errors import ConfigError
from transformer.models import path_name, raw_key
from transformer.training import distributed

log = logging.getLogger(__name__)

_ITEMS = ('state', 'data_position', 'fingerprint')
ORDER_KEYS = ('train.seed', 'data.source', 'data.train_split', 'data.shuffle_buffer')
_BEST_METRIC = 'eval/loss'
_CORRUPT_SUFFIX = '.corrupt'


def _normalize_json(obj):
  """`obj` as it reads back from JSON (tuples become lists, keys strings), for comparisons."""
  return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _flatten_json(obj, prefix=''):
  """Nested dicts -> {'a.b': leaf}; lists stay leaves (shape tuples read best whole)."""
  if isinstance(obj, dict):
    out = {}
    for k, v in obj.items():
      out.update(_flatten_json(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: obj}


def _fingerprint_diff(saved, current, limit=3):
  """A short 'key: saved != current' description of how two fingerprints differ."""
  a, b = _flatten_json(saved), _flatten_json(current)
  keys = sorted(k for k in set(a) | set(b) if a.get(k, '<absent>') != b.get(k, '<absent>'))
  parts = [f'{k}: {a.get(k, "<absent>")} != {b.get(k, "<absent>")}' for k in keys[:limit]]
  if len(keys) > limit:
    parts.append(f'and {len(keys) - limit} more')
  return '; '.join(parts)


def _new_run_hint(directory):
  return (f'or start a new run (another --workdir or run_name; '
          f'--config.checkpoint.init_from={directory} keeps the weights)')


def _best_metric(metrics):
  """Ranking value for BestN: eval loss, lower is better; steps without one never rank best."""
  value = metrics.get(_BEST_METRIC) if isinstance(metrics, dict) else None
  if value is None or not math.isfinite(float(value)):
    return math.inf
  return float(value)


class Checkpointer:
  """Saves and restores the train state of one run directory.

  Keeps the latest `keep` checkpoints plus, with `keep_best`, the one with the lowest
  `metrics['eval/loss']`. Saves are asynchronous by default: `save` returns once the arrays are
  copied off the device and the files are written in the background (`wait_until_finished`).
  """

  def __init__(self, directory, *, every, keep, keep_best=True, async_save=True,
               fingerprint: dict | None = None, settings: dict | None = None,
               model_defaults: dict | None = None):
    if every <= 0:
      raise ConfigError(f'`checkpoint.every={every}`: must be a positive number of steps, e.g. --config.checkpoint.every=500')
    if keep <= 0:
      raise ConfigError(f'`checkpoint.keep={keep}`: must be at least 1, e.g. --config.checkpoint.keep=3')
    self.directory = os.path.abspath(os.fspath(directory))
    self.every = int(every)
    self.fingerprint = None if fingerprint is None else _normalize_json(fingerprint)
    self.settings = _normalize_json(settings or {})   # {'train.seed': 0, 'opt.b1': 0.9, ...}
    self.model_defaults = _normalize_json(model_defaults or {})
    self._saved_settings = {}
    policies = [ocp_policies.LatestN(n=int(keep))]
    if keep_best:
      policies.append(ocp_policies.BestN(
          get_metric_fn=_best_metric, reverse=True, n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp_policies.AnyPreservationPolicy(policies),
        # best_fn also makes orbax store each step's metrics, so the best survives a restart.
        best_fn=_best_metric if keep_best else None,
        best_mode='min',
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, item_names=_ITEMS, options=options)
    # Orbax removes leftovers of interrupted writes in a background thread; wait for it, so no
    # file system work of ours overlaps whatever the caller does next (tfds.testing.mock_data
    # reroutes every epath call while it reads, and would send that cleanup elsewhere).
    wait_cleanup = getattr(self._manager, '_maybe_await_cleanup_tmp_directory', None)
    if wait_cleanup is not None:
      wait_cleanup()
    self._check_fingerprint()

  # --- queries ---------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The kept step with the lowest eval loss (the latest step when keep_best is off)."""
    return self._manager.best_step()

  def should_save(self, step) -> bool:
    return int(step) % self.every == 0

  def data_position(self, step) -> dict:
    """The data position saved with `step` (without restoring the state)."""
    return dict(self._manager.restore(int(step), args=ocp.args.Composite(
        data_position=ocp.args.JsonRestore()))['data_position'] or {})

  def metrics(self, step) -> dict:
    """The metrics recorded with `step` ({} when it was saved without any)."""
    return dict(self._manager.metrics(int(step)) or {})

  def changed_settings(self) -> list[tuple[str, Any, Any]]:
    """[(key, saved value, current value)] of the settings that differ from the checkpoints'."""
    return [(k, self._saved_settings[k], v) for k, v in sorted(self.settings.items())
            if k in self._saved_settings and self._saved_settings[k] != v]

  # --- save ------------------------------------------------------------------------------------

  def save(self, step, state, *, data_position: dict, metrics: dict | None = None,
           force=False) -> bool:
    """Saves `state` and `data_position` at `step` when due (`force`: always). True if it saved.

    Saving a step that already exists is a no-op (e.g. the final save right after a periodic one).
    """
    step = int(step)
    if not (force or self.should_save(step)):
      return False
    if step in self._manager.all_steps():
      return False
    items = dict(
        state=ocp.args.StandardSave(state),
        data_position=ocp.args.JsonSave(_normalize_json(data_position)),
        fingerprint=ocp.args.JsonSave({**(self.fingerprint or {}),
                                       **({'settings': self.settings} if self.settings else {})}),
    )
    # Steps without eval metrics rank last ({} -> inf) rather than being exempt from cleanup.
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

  # --- restore ---------------------------------------------------------------------------------

  def restore(self, abstract_state, step=None):
    """Restores into the shardings of `abstract_state` -> (step, state, data_position).

    With `step=None` takes the latest step. When it is unreadable but an older one restores, the
    unreadable ones are moved aside to `<step>.corrupt` (kept on disk) with a warning. When no
    step restores, nothing is moved and the newest step's error is raised (that is a mismatch
    between `abstract_state` and the checkpoints, not corruption).
    """
    self.wait_until_finished()
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    failed = []
    for s in steps:
      try:
        restored = self._manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data_position=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        failed.append((s, e))
        continue
      for bad_step, error in failed:
        self._quarantine(bad_step, error, s)
      return s, restored['state'], dict(restored['data_position'] or {})
    self._raise_if_optimizer_changed()
    raise failed[0][1]

  def _raise_if_optimizer_changed(self):
    """No step restores and an opt.* setting changed: that change is why (another state tree)."""
    changed = [c for c in self.changed_settings() if c[0].startswith('opt.')]
    if changed:
      key, saved, current = changed[0]
      more = f' (also {", ".join(c[0] for c in changed[1:])})' if changed[1:] else ''
      raise ConfigError(
          f'`{key}={current}`: the checkpoints in {self.directory} hold the optimizer state of '
          f'{key}={saved}{more}, which has another structure; resume with '
          f'--config.{key}={saved}, {_new_run_hint(self.directory)}')

  def _quarantine(self, step, error, next_step):
    """Moves an unreadable step out of orbax's sight (kept on disk, never deleted)."""
    path = os.path.join(self.directory, str(step))
    target, n = path + _CORRUPT_SUFFIX, 1
    while os.path.exists(target):
      target, n = f'{path}{_CORRUPT_SUFFIX}{n}', n + 1
    text = str(error).strip()
    first_line = text.splitlines()[0][:200] if text else ''
    log.warning('checkpoint %s is unreadable (%s: %s); moved it to %s, restoring step %s instead',
                path, type(error).__name__, first_line, target, next_step)
    if distributed.is_primary() and os.path.exists(path):
      os.rename(path, target)
    ocp.multihost.sync_global_processes(f'checkpoint_quarantine_{step}')
    self._manager.reload()

  # --- fingerprint -----------------------------------------------------------------------------

  def _saved_fingerprint(self):
    """The fingerprint of the newest step whose fingerprint reads back; None if none does."""
    for s in sorted(self._manager.all_steps(), reverse=True):
      try:
        fp = self._manager.restore(s, args=ocp.args.Composite(fingerprint=ocp.args.JsonRestore()))
        return fp['fingerprint']
      except Exception:  # pylint: disable=broad-except
        continue
    return None

  def _check_fingerprint(self):
    if not (self.fingerprint or self.settings) or self._manager.latest_step() is None:
      return
    saved = dict(self._saved_fingerprint() or {})
    self._saved_settings = saved.pop('settings', {})
    current = (self.fingerprint or {}).get('model')
    if isinstance(saved.get('model'), dict) and isinstance(current, dict):
      # Only the keys that identify a model today count: a key added since the checkpoint was
      # written reads as its default there, one no longer part of the identity is ignored.
      saved['model'] = {k: saved['model'].get(k, self.model_defaults.get(k)) for k in current
                        if k in saved['model'] or k in self.model_defaults}
    if self.fingerprint and saved and saved != self.fingerprint:
      raise ConfigError(
          f'workdir checkpoints in {self.directory} belong to a different model '
          f'({_fingerprint_diff(saved, self.fingerprint)}); use another --workdir, or '
          f'--config.checkpoint.init_from={self.directory} to start from its weights')
    for key, saved_value, current in self.changed_settings():
      if key in ORDER_KEYS:
        raise ConfigError(
            f'`{key}={current}`: the checkpoints in {self.directory} were trained with '
            f'{key}={saved_value}, and their data positions point into the order it gives; '
            f'resume with --config.{key}={saved_value}, {_new_run_hint(self.directory)}')

  # --- lifecycle -------------------------------------------------------------------------------

  def wait_until_finished(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _saved_params(manager, step):
  """({param path: (key path, metadata)} of a checkpoint's parameters, the key prefix to them):
  our runs save {'params': ...} inside the state, other writers the parameters alone."""
  saved_tree = manager.item_metadata(step)['state']
  saved_tree = getattr(saved_tree, 'tree', saved_tree)
  if isinstance(saved_tree, dict) and 'params' in saved_tree:
    saved_params, prefix = saved_tree['params'], ('params',)
  else:
    saved_params, prefix = saved_tree, ()
  return {path_name(kp): (kp, leaf) for kp, leaf in
          jax.tree_util.tree_flatten_with_path(saved_params)[0] if hasattr(leaf, 'shape')}, prefix


def _restore_plan(flat, saved, prefix):
  """The partial-restore target for the abstract leaves `flat` whose path and shape the
  checkpoint has -> (item, restore_args, [(path, saved key path)], missing paths)."""
  item, restore_args, wanted, missing = {}, {}, [], []
  for kp, leaf in flat:
    name = path_name(kp)
    hit = saved.get(name)
    if hit is None or tuple(hit[1].shape) != tuple(leaf.shape):
      missing.append(name)
      continue
    saved_kp = prefix + tuple(raw_key(k) for k in hit[0])
    sharding = getattr(leaf, 'sharding', None) or jax.sharding.SingleDeviceSharding(
        jax.local_devices()[0])
    _nested_set(item, saved_kp, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding))
    _nested_set(restore_args, saved_kp, ocp.ArrayRestoreArgs(dtype=leaf.dtype, sharding=sharding))
    wanted.append((name, saved_kp))
  return item, restore_args, wanted, missing


def load_pretrained(path, abstract_params) -> tuple[Any, list[str], list[str]]:
  """Reads the parameters of the latest checkpoint under `path` that fit `abstract_params`.

  Only `state['params']` is read (never the optimizer state). A parameter is taken when its path
  (e.g. 'layers/0/mlp/wi/kernel') and shape match; it is cast to the abstract dtype and placed
  with the abstract sharding. Leaves of `abstract_params` may be jax.ShapeDtypeStruct or concrete
  arrays (e.g. a fresh init): leaves not found in the checkpoint come back unchanged, so the
  trainer keeps its fresh head.

  Returns:
    (params, missing, unexpected): params has the structure of `abstract_params`; `missing` lists
    its paths that were not loaded, `unexpected` the checkpoint's parameters that were not used.
  """
  key = 'checkpoint.init_from'
  directory = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.isdir(directory):
    raise ConfigError(f'{key}: {path} is not a directory; give a checkpoint directory '
                      '(a run\'s checkpoints/ or the output of import-hf)')
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers=dict(state=ocp.PyTreeCheckpointHandler(),
                         data_position=ocp.JsonCheckpointHandler(),
                         fingerprint=ocp.JsonCheckpointHandler()))
  try:
    step = manager.latest_step()
    if step is None:
      raise ConfigError(f'{key}: no checkpoint found in {directory}; point it at a directory '
                        'holding numbered step folders')
    saved, prefix = _saved_params(manager, step)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    item, restore_args, wanted, missing = _restore_plan(flat, saved, prefix)
    used = {name for name, _ in wanted}
    unexpected = sorted(n for n in saved if n not in used)
    values = {}
    if wanted:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True)))['state']
      for name, saved_kp in wanted:
        node = restored
        for k in saved_kp:
          node = node[k]
        values[name] = node
  finally:
    manager.close()
  leaves = [values.get(path_name(kp), leaf) for kp, leaf in flat]
  return jax.tree_util.tree_unflatten(treedef, leaves), missing, unexpected


def _nested_set(tree, keys, value):
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value
