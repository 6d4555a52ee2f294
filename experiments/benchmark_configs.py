"""The configs every step benchmark measures: a family's published size with the benchmark's batch,
length, dtype and mesh (experiments/benchmark.py and benchmark_torch.py share them).

On CPU the batch and sequence length are cut to at most CPU_BATCH x CPU_SEQ_LEN unless given.
"""

import math

import jax

from transformer import config as config_lib
from transformer.errors import ConfigError

FAMILIES = {'encoder': 'configs/bert.py', 'decoder': 'configs/gpt2.py',
            'encoder_decoder': 'configs/t5.py'}
# A size a family lacks -> the size that plays its part (BERT's smallest published one is base).
SIZE_ALIASES = {'encoder': {'small': 'base'}}
CPU_BATCH, CPU_SEQ_LEN = 2, 128


def platform():
  return 'cpu' if jax.devices()[0].platform == 'cpu' else 'accelerator'


def family_config(family, size, args, mesh_preset, overrides, mesh_shape=None):
  """(spec, validated config) of `family` at `size` with the benchmark's batch, length, dtype
  (and mesh: `mesh_preset` over `mesh_shape`, default all local devices on the data axis)."""
  spec = f'{FAMILIES[family]}:{size}'
  try:
    config = config_lib.load_file(spec)
  except ConfigError as e:
    alias = SIZE_ALIASES.get(family, {}).get(size)
    if alias is None:
      raise ConfigError(f'--sizes {size}: not a size of {FAMILIES[family]} ({e})') from None
    spec = f'{FAMILIES[family]}:{alias}'
    config = config_lib.load_file(spec)
  cpu = platform() == 'cpu'
  batch = args.batch_size or (min(config.train.batch_size, CPU_BATCH) if cpu else
                              config.train.batch_size)
  seq_len = args.seq_len or (min(config.data.seq_len, CPU_SEQ_LEN) if cpu else
                             config.data.seq_len)
  ours = {'train.batch_size': batch, 'data.seq_len': seq_len, 'model.dtype': args.dtype,
          'mesh.preset': mesh_preset, 'train.steps': args.warmup + args.steps,
          'opt.accumulation_steps': 1}
  if mesh_shape is not None:
    ours['mesh.shape'] = tuple(mesh_shape)
  if config.data.targets_len and seq_len != config.data.seq_len:
    # Keep the family's targets/inputs ratio (T5 small: 114/512) when the length changes.
    ratio = config.data.targets_len / config.data.seq_len
    ours['data.targets_len'] = max(8, math.ceil(seq_len * ratio))
  config_lib.apply_overrides(config, ours)
  config_lib.apply_overrides(config, overrides)   # the user's --config.* win
  return spec, config_lib.validate(config)
