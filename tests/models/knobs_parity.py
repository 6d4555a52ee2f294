"""Training steps with the architecture knobs on, under one mesh and another, in a fresh process
with 8 fake CPU devices (tests/models/test_knobs_sharding.py starts it; XLA's device count is
fixed when jax starts):

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/models/knobs_parity.py \
      FAMILY STEPS MESHES OUT_DIR KEY=VALUE...

prints one JSON line {mesh: {'losses', 'grad_norms', 'z_losses', 'aux_losses' (MoE)}} and writes each mesh's final
parameters to OUT_DIR/<family>_<mesh>.npz (the layout tests/e2e/test_sharding.py compares).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.e2e import sharding_helper as helper  # noqa: E402
from transformer.training import sharding  # noqa: E402


def run(family, steps, mesh_names, out_dir, *assignments):
  overrides = dict(a.split('=', 1) for a in assignments)
  result = {}
  for name in mesh_names.split(','):
    config = helper.make_config(family, name, **overrides)
    trainer, objective, mesh = helper.setup(config, name)
    data = helper.batches(config, objective, int(steps))
    state = trainer.init_state()
    step_fn = trainer.compile(state, sharding.global_batch(data[0], mesh))
    got = {'losses': [], 'grad_norms': [], 'z_losses': [], 'aux_losses': [],
           'attention': trainer.attention[0]}
    for batch in data:
      state, metrics = step_fn(state, sharding.global_batch(batch, mesh))
      metrics = jax.device_get(metrics)
      for key, name_ in (('losses', 'loss'), ('grad_norms', 'grad_norm'), ('z_losses', 'z_loss'),
                         ('aux_losses', 'moe/aux_loss')):
        total, count = metrics.get(name_, (0.0, 1.0))
        got[key].append(float(total / max(float(count), 1e-9)))
    np.savez(os.path.join(out_dir, f'{family}_{name}.npz'),
             **helper.flat_params(state['params']))
    result[name] = got
  return result


if __name__ == '__main__':
  print(json.dumps(run(*sys.argv[1:])))
