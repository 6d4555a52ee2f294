"""Runs sharded training in a fresh process with N fake CPU devices; the tests call it.

XLA's device count is fixed when jax first initialises, so each mode runs as its own process:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/e2e/sharding_helper.py MODE ARGS

Commands (several may be joined with '+') print a JSON list of results on the last line:
  parity FAMILY STEPS MESHES   losses and final params (as .npz under $OUT_DIR) per mesh
  memory                       per-device bytes of params + optimizer state under FSDP x 8
  error KEY=VALUE...           the ConfigError message of a Trainer.create with these overrides
  batch_rule MESH RULES ACCUM  rows of the batch each device holds where the loss reads them
                               (train and eval steps) under mesh.rules=RULES ('' for none)
  save DIR / restore DIR       train under one mesh, checkpoint, restore under another, go on
  multiprocess STEPS [FOREVER] one process of a jax.distributed job (TRANSFORMER_* environment;
                               tests/e2e/test_distributed.py starts them): FSDP over every device
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from transformer import objectives  # noqa: E402

from transformer.training import checkpoint  # noqa: E402

from transformer.training import sharding  # noqa: E402
from transformer import config as config_lib  # noqa: E402
from transformer.data import packing  # noqa: E402
from transformer.errors import ConfigError  # noqa: E402
from transformer.training.trainer import Trainer  # noqa: E402

VOCAB = 128


class FakeTokenizer:
  """Fixed ids (0 pad, 1 eos, 2 unk, 3 bos, 4 mask, 5 sep, 6 cls, 7..38 sentinels)."""
  vocab_size = VOCAB
  pad_id, eos_id, unk_id, bos_id = 0, 1, 2, 3
  mask_id, sep_id, cls_id = 4, 5, 6
  sentinel_ids = list(range(7, 39))

  def decode(self, ids):
    return ' '.join(str(int(i)) for i in ids)


# Tiny members of each family whose sizes divide 8 (fsdp) and 4 (tensor).
FAMILIES = {
    'decoder': ('configs/gpt2.py:tiny', {}),
    'encoder': ('configs/bert.py:tiny', {'model.type_vocab_size': '4', 'model.num_heads': '4'}),
    'encoder_decoder': ('configs/t5.py:tiny', {'data.targets_len': '16'}),
}
TINY = {'model.num_layers': '1', 'model.d_model': '32', 'model.d_ff': '64', 'model.max_len': '32',
        'model.vocab_size': str(VOCAB), 'model.dropout_rate': '0.0',
        'model.attention_dropout_rate': '0.0', 'data.seq_len': '32', 'train.batch_size': '8',
        'opt.warmup_steps': '0', 'opt.learning_rate': '1e-3', 'opt.accumulation_steps': '1'}
# name -> (mesh.shape, mesh.preset, device count)
MESHES = {
    'single': ((1, 1, 1), 'data', 1),
    'data8': ((8, 1, 1), 'data', 8),
    'fsdp8': ((1, 8, 1), 'fsdp', 8),
    'tensor4': ((1, 1, 4), 'tensor', 4),
    'data2_tensor4': ((2, 1, 4), 'data_tensor', 8),
    'fsdp2_tensor4': ((1, 2, 4), 'fsdp_tensor', 8),
    'data2': ((2, 1, 1), 'data', 2),
    'expert4_tensor2': ((4, 1, 2), 'expert_tensor', 8),   # MoE experts split over data
}



def shard_bytes(tree):
  """(bytes on the most loaded device, total logical bytes) of a pytree of jax.Arrays."""
  per_device, total = {}, 0
  for x in jax.tree.leaves(tree):
    total += x.size * x.dtype.itemsize
    for shard in x.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  return max(per_device.values(), default=0), total

def make_config(family, mesh_name='single', **overrides):
  spec, family_overrides = FAMILIES[family]
  shape, preset, _ = MESHES[mesh_name]
  values = {**TINY, **family_overrides, 'mesh.shape': str(shape), 'mesh.preset': preset,
            **overrides}
  return config_lib.load(spec, values)


def batches(config, objective, count, seed=0):
  """`count` global batches (numpy) of random tokens through the objective's real features."""
  rng = np.random.default_rng(seed)

  def examples():
    i = 0
    while True:
      raw = {}
      for field in objective.example_fields:
        if field == 'label':
          raw[field] = int(rng.integers(0, config.model.num_classes))
        else:
          raw[field] = rng.integers(39, VOCAB, size=int(rng.integers(8, 40))).astype(np.int32)
      features = objective.features(raw, rng)
      yield i, packing.truncate(features, objective.stream_lengths)
      i += 1
  gen = packing.batches(examples(), objective.stream_lengths, config.train.batch_size,
                        config.data.pack)
  return [next(gen)[0] for _ in range(count)]


def setup(config, mesh_name):
  devices = jax.devices()[:MESHES[mesh_name][2]]
  mesh = sharding.make_mesh(config.mesh, devices)
  objective = objectives.get(config, FakeTokenizer())
  trainer = Trainer.create(config, objective, mesh, total_steps=100)
  return trainer, objective, mesh


def train_steps(trainer, state, data, mesh):
  step_fn = trainer.compile(state, sharding.global_batch(data[0], mesh))
  losses, grad_norms = [], []
  for batch in data:
    state, metrics = step_fn(state, sharding.global_batch(batch, mesh))
    metrics = jax.device_get(metrics)
    losses.append(float(metrics['loss'][0] / metrics['loss'][1]))
    grad_norms.append(float(metrics['grad_norm'][0]))
  return state, losses, grad_norms


def flat_params(params):
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def parity(family, steps, mesh_names, out_dir):
  result = {}
  for name in mesh_names.split(','):
    config = make_config(family, name)
    trainer, objective, mesh = setup(config, name)
    data = batches(config, objective, int(steps))
    state, losses, grad_norms = train_steps(trainer, trainer.init_state(), data, mesh)
    np.savez(os.path.join(out_dir, f'{family}_{name}.npz'), **flat_params(state['params']))
    result[name] = {'losses': losses, 'grad_norms': grad_norms}
  return result


def memory():
  config = make_config('encoder_decoder', 'fsdp8', **{'model.d_model': '64', 'model.d_ff': '256'})
  trainer, _, _ = setup(config, 'fsdp8')
  state = trainer.init_state()
  out = {}
  for part in ('params', 'opt_state'):
    most, total = shard_bytes(state[part])
    out[part] = {'max_device_bytes': most, 'total_bytes': total}
  out['table'] = trainer.sharding_table
  return out


def error(*assignments):
  overrides = dict(a.split('=', 1) for a in assignments)
  family = overrides.pop('family', 'decoder')
  mesh_name = overrides.pop('mesh', 'single')
  try:
    config = make_config(family, mesh_name, **overrides)
    setup(config, mesh_name)
  except ConfigError as e:
    return {'error': str(e)}
  return {'error': None}


class ShardRows:
  """The real objective, recording how many batch rows each device holds where the loss reads
  them (jax.debug.inspect_array_sharding reports the sharding XLA chose, at compile time)."""

  def __init__(self, inner):
    self.inner, self.head, self.rows = inner, inner.head, []

  def __getattr__(self, name):   # the rest of the Objective API (frozen, reading, ...)
    return getattr(self.inner, name)

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    x = batch['targets']
    jax.debug.inspect_array_sharding(
        x, callback=lambda s: self.rows.append(int(s.shard_shape(x.shape)[0])))
    return self.inner.loss_and_metrics(model, batch, deterministic=deterministic)

  def eval_metrics(self, model, batch):
    return self.loss_and_metrics(model, batch, deterministic=True)[1]


def batch_rule(mesh_name, rules, accumulation_steps='1'):
  overrides = {'opt.accumulation_steps': accumulation_steps}
  if rules:
    overrides['mesh.rules'] = rules
  config = make_config('decoder', mesh_name, **overrides)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:MESHES[mesh_name][2]])
  objective = ShardRows(objectives.get(config, FakeTokenizer()))
  trainer = Trainer.create(config, objective, mesh, total_steps=100)
  data = batches(config, objective.inner, 2)
  _, losses, _ = train_steps(trainer, trainer.init_state(), data, mesh)
  train_rows = objective.rows[:]
  metrics = jax.device_get(jax.jit(trainer.eval_step)(trainer.init_state()['params'],
                                                      sharding.global_batch(data[0], mesh)))
  return {'train_rows': train_rows, 'eval_rows': objective.rows[len(train_rows):],
          'losses': losses, 'eval_loss': float(metrics['loss'][0])}


def save_then_restore(mode, directory):
  """save: 3 steps under FSDP x 8, checkpoint, 2 more steps (reference losses).
  restore: under data x 2, restore the step-3 checkpoint and run the same 2 steps."""
  mesh_name = 'fsdp8' if mode == 'save' else 'data2'
  config = make_config('decoder', mesh_name)
  trainer, objective, mesh = setup(config, mesh_name)
  data = batches(config, objective, 5)
  state = trainer.init_state()
  ckpt = checkpoint.Checkpointer(directory, every=1, keep=2, keep_best=False, async_save=False)
  if mode == 'save':
    state, first, _ = train_steps(trainer, state, data[:3], mesh)
    ckpt.save(3, state, data_position={'position': [0, 3]}, force=True)
    ckpt.wait_until_finished()
  else:
    step, state, _ = ckpt.restore(Trainer.abstract(state))
    assert step == 3, step
    first = None
  specs = sorted({str(x.sharding.spec) for x in jax.tree.leaves(state['params'])})
  state, losses, _ = train_steps(trainer, state, data[3:], mesh)
  ckpt.close()
  return {'losses': losses, 'first': first, 'devices': jax.device_count(), 'specs': specs}


def multiprocess(steps, forever='0'):
  """One process of a multi-process job (the environment names it): each feeds its rows of the
  same global batches; process 0 reports the losses. `forever` keeps stepping (failure tests)."""
  from transformer.training import distributed  # pylint: disable=import-outside-toplevel
  distributed.initialize()
  config = make_config('decoder', 'fsdp8', **{'mesh.shape': '(1, -1, 1)'})
  mesh = sharding.make_mesh(config.mesh)
  objective = objectives.get(config, FakeTokenizer())
  trainer = Trainer.create(config, objective, mesh, total_steps=100)
  data = batches(config, objective, int(steps))
  n, i = jax.process_count(), jax.process_index()
  local = [{k: v[i * len(v) // n:(i + 1) * len(v) // n] for k, v in b.items()} for b in data]
  state = trainer.init_state()
  print('ready', flush=True)
  state, losses, _ = train_steps(trainer, state, local, mesh)
  while forever != '0':
    state, _, _ = train_steps(trainer, state, local, mesh)
  return {'losses': losses, 'processes': n, 'devices': jax.device_count(),
          'local_devices': jax.local_device_count()}


def run(mode, *args):
  if mode == 'multiprocess':
    return multiprocess(*args)
  if mode == 'parity':
    return parity(*args)
  if mode == 'memory':
    return memory()
  if mode == 'error':
    return error(*args)
  if mode == 'batch_rule':
    return batch_rule(*args)
  if mode in ('save', 'restore'):
    return save_then_restore(mode, *args)
  raise SystemExit(f'unknown mode {mode}')


def main(argv):
  """Several commands may share one process (and its start-up time), separated by '+'."""
  commands, current = [], []
  for arg in argv + ['+']:
    if arg == '+':
      commands.append(current)
      current = []
    else:
      current.append(arg)
  print(json.dumps([run(*c) for c in commands if c]))


if __name__ == '__main__':
  main(sys.argv[1:])
