"""The jitted train step (transformer/trainer.py): dropout keys under gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.e2e.sharding_helper import FakeTokenizer, TINY
from transformer import config as config_lib
from transformer import objectives
from transformer.training import sharding
from transformer.training.trainer import Trainer


class RecordingObjective:
  """The real objective, also reporting each call's summed loss (one per micro-batch)."""

  def __init__(self, inner):
    self.inner, self.head, self.losses = inner, inner.head, []

  def __getattr__(self, name):   # the rest of the Objective API (frozen, reading, ...)
    return getattr(self.inner, name)

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    loss, metrics = self.inner.loss_and_metrics(model, batch, deterministic=deterministic)
    jax.debug.callback(lambda s: self.losses.append(float(s)), metrics['loss'][0])
    return loss, metrics


def _trainer(accumulation_steps, batch_size=4, dropout_rate=0.3):
  config = config_lib.load('configs/gpt2.py:tiny', {
      **TINY, 'model.dropout_rate': str(dropout_rate), 'train.batch_size': str(batch_size),
      'opt.accumulation_steps': str(accumulation_steps), 'mesh.shape': '(1, 1, 1)'})
  objective = RecordingObjective(objectives.get(config, FakeTokenizer()))
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  trainer = Trainer.create(config, objective, mesh, total_steps=10)
  return trainer, objective


def _batch(rows, length=32, copies=2, seed=0):
  """`copies` identical blocks of `rows` rows: micro-batch k of an accumulated step is block k."""
  tokens = np.random.default_rng(seed).integers(39, 128, (rows, length)).astype(np.int32)
  one = {'targets': tokens, 'targets_segment_ids': np.ones_like(tokens),
         'targets_positions': np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)}
  return {k: jnp.asarray(np.concatenate([v] * copies)) for k, v in one.items()}


def _step(trainer, batch):
  state = trainer.init_state()
  new_state, metrics = jax.jit(trainer.train_step)(state, batch)
  return jax.device_get(new_state['params']), jax.device_get(metrics)


def test_accumulated_micro_batches_get_their_own_dropout_masks():
  """Two identical micro-batches: the same dropout masks would give the same loss twice."""
  trainer, objective = _trainer(accumulation_steps=2)
  _step(trainer, _batch(rows=2))
  assert len(objective.losses) == 2, objective.losses
  assert objective.losses[0] != objective.losses[1], objective.losses


@pytest.mark.parametrize('accumulation_steps', [1, pytest.param(2, marks=pytest.mark.slow)])
def test_dropout_keys_are_a_function_of_seed_and_step(accumulation_steps):
  """A fresh trainer (a resumed run) draws the same masks for the same step: same update."""
  first, second = (_step(_trainer(accumulation_steps)[0], _batch(rows=2))
                   for _ in range(2))
  jax.tree.map(np.testing.assert_array_equal, first, second)
  trainer, objective = _trainer(accumulation_steps)
  state = trainer.init_state()
  step = jax.jit(trainer.train_step)
  _, m0 = step(state, _batch(rows=2))
  _, m1 = step({**state, 'step': state['step'] + 1}, _batch(rows=2))
  assert float(m0['loss'][0]) != float(m1['loss'][0])   # another step, other masks



def test_accumulated_step_without_dropout_equals_one_big_step():
  """Micro-batch gradients are summed and divided by the step's token count once."""
  (one, m1), (two, m2) = (_step(_trainer(a, dropout_rate=0.0)[0], _batch(rows=4, copies=1))
                          for a in (1, 2))
  np.testing.assert_allclose(float(m2['loss'][0]), float(m1['loss'][0]), rtol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), two, one)
