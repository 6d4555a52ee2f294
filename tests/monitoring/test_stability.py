"""Stability diagnostics (`log.stability`, monitoring/stability.py): each statistic against a
hand computation on a tiny model, the update ratio against the optimizer's update, scanned layers
equal to unrolled ones, the tags and layout of a real run, and the max-logit warning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.e2e.sharding_helper import FakeTokenizer, TINY
from transformer import config as config_lib
from transformer import models, objectives
from transformer.monitoring import stability
from transformer.monitoring import writer as tb
from transformer.monitoring.events import read_events
from transformer.training import evaluation, hooks, loop, setup, sharding
from transformer.training.trainer import Trainer

SMALL = dict(vocab_size=64, num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=16)


def _tokens():
  tokens = jax.random.randint(jax.random.key(3), (2, 8), 5, 64)
  segment_ids = jnp.array([[1, 1, 1, 2, 2, 2, 0, 0], [1] * 8], jnp.int32)
  positions = jnp.array([[0, 1, 2, 0, 1, 2, 0, 0], list(range(8))], jnp.int32)
  return tokens, segment_ids, positions


@nnx.jit
def _sown(model, tokens, segment_ids, positions):
  stability.enable(model)
  model(tokens, segment_ids, positions)
  return nnx.pop(model, nnx.Intermediate)


def _scalars(model):
  state = _sown(model, *_tokens())
  return {k: float(v) for k, (v, _) in stability.sown_scalars(state, ('decoder',)).items()}


def test_attention_and_residual_statistics_match_a_hand_computation():
  model = models.build(models.HParams.from_config({**SMALL, 'init_std': 0.5}),
                       rngs=nnx.Rngs(0))
  got = _scalars(model)
  tokens, segment_ids, positions = _tokens()
  x = np.asarray(model.embed(tokens) + model.decoder.position_embedding.value[positions])
  for i, block in enumerate(model.decoder.layers):
    att = block.self_attention
    h = np.asarray(block.attention_norm(jnp.asarray(x)), np.float64)
    q = np.einsum('btd,dnh->btnh', h, att.query.kernel.value) + att.query.bias.value
    k = np.einsum('btd,dnh->btnh', h, att.key.kernel.value) + att.key.bias.value
    logits = np.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(8)
    s = np.asarray(segment_ids)
    allowed = ((s[:, :, None] == s[:, None, :]) & (s[:, None, :] != 0) &
               (np.asarray(positions)[:, None, :] <= np.asarray(positions)[:, :, None]))
    want = logits[np.broadcast_to(allowed[:, None], logits.shape)].max()
    np.testing.assert_allclose(got[f'stability/max_attention_logit/layer{i}'], want, rtol=1e-4)
    real = s != 0
    for name, vectors in (('query_norm', q), ('key_norm', k)):
      np.testing.assert_allclose(got[f'stability/{name}/layer{i}'],
                                 np.linalg.norm(vectors, axis=-1)[real].mean(), rtol=1e-4)
    x = np.asarray(block(jnp.asarray(x), segment_ids=segment_ids, positions=positions,
                         causal=True))
    np.testing.assert_allclose(got[f'stability/residual_rms/layer{i}'],
                               np.sqrt(np.mean(x[real].astype(np.float64) ** 2)), rtol=1e-4)


def _trainer(**overrides):
  config = config_lib.load('configs/gpt2.py:tiny', {
      **TINY, 'model.num_layers': '2', 'train.batch_size': '4', 'mesh.shape': '(1, 1, 1)',
      'log.stability': 'true', **overrides})
  objective = objectives.get(config, FakeTokenizer())
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  return Trainer.create(config, objective, mesh, total_steps=10)


def _batch():
  tokens = np.random.default_rng(0).integers(39, 128, (4, 32)).astype(np.int32)
  return {'targets': jnp.asarray(tokens), 'targets_segment_ids': jnp.ones_like(tokens),
          'targets_positions': jnp.broadcast_to(jnp.arange(32, dtype=jnp.int32), tokens.shape)}


def _step_scalars(trainer):
  state = trainer.init_state()
  new_state, metrics = jax.jit(trainer.train_step)(state, _batch())
  return jax.device_get(state['params']), jax.device_get(new_state['params']), \
      evaluation.average(jax.device_get(metrics))


def test_update_ratio_and_norms_match_the_optimizer_update():
  old, new, scalars = _step_scalars(_trainer())
  for group, tree_of in (('layer1', lambda p: p['decoder']['layers'][1]),
                         ('token_embed', lambda p: p['token_embed'])):
    before = np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree_of(old))])
    after = np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree_of(new))])
    np.testing.assert_allclose(scalars[f'stability/param_norm/{group}'],
                               np.linalg.norm(before), rtol=1e-5)
    np.testing.assert_allclose(scalars[f'stability/update_ratio/{group}'],
                               np.linalg.norm(after - before) / np.linalg.norm(before), rtol=1e-4)
  groups = {t.rsplit('/', 1)[1] for t in scalars if t.startswith('stability/grad_norm/')}
  assert groups == {'layer0', 'layer1', 'token_embed', 'decoder'}, groups
  total = sum(scalars[f'stability/grad_norm/{g}'] ** 2 for g in groups)
  np.testing.assert_allclose(np.sqrt(total), scalars['grad_norm'], rtol=1e-5)


def test_scanned_layers_give_the_unrolled_values():
  hp = models.HParams.from_config(SMALL)
  unrolled = models.build(hp, rngs=nnx.Rngs(0))
  scanned = models.build(models.HParams.from_config({**SMALL, 'scan_layers': True}),
                         rngs=nnx.Rngs(1))
  params = nnx.to_pure_dict(nnx.state(unrolled, nnx.Param))
  layers = params['decoder']['layers']
  stacked = {**params, 'decoder': {**params['decoder'], 'layers': jax.tree.map(
      lambda *xs: jnp.stack(xs), *[layers[i] for i in range(len(layers))])}}
  state = nnx.state(scanned, nnx.Param)
  nnx.replace_by_pure_dict(state, stacked)
  nnx.update(scanned, state)
  got, want = _scalars(scanned), _scalars(unrolled)
  assert set(got) == set(want) and len(want) == 8, sorted(got)
  for tag in want:
    np.testing.assert_allclose(got[tag], want[tag], rtol=1e-5, err_msg=tag)
  per_group = lambda p: {k: float(v) for k, (v, _) in
                         stability.parameter_scalars(p, p, p).items()}
  a, b = per_group(stacked), per_group(params)
  assert set(a) == set(b)
  for tag in b:
    np.testing.assert_allclose(a[tag], b[tag], rtol=1e-5, err_msg=tag)


@pytest.mark.slow   # a whole training run (~12 s of CPU)
def test_a_run_writes_every_statistic_per_layer_and_does_not_warn(tmp_path, capsys):
  config = config_lib.load('configs/gpt2.py:tiny', {
      **TINY, 'model.num_layers': '2', 'train.batch_size': '4', 'mesh.shape': '(1, 1, 1)',
      'train.steps': '2', 'train.log_every': '1', 'train.eval_steps': '0', 'log.samples': '0',
      'checkpoint.async_save': 'false', 'data.vocab_size': '1024', 'model.vocab_size': '0',
      'log.stability': 'true'})
  loop.train(config, str(tmp_path))
  scalars = read_events(setup.run_dir(config, str(tmp_path)))['scalars']
  for stat in stability.STATS:
    for layer in ('layer0', 'layer1'):
      assert [s for s, _ in scalars[f'stability/{stat}/{layer}']] == [1, 2], (stat, layer)
  assert 'warning' not in capsys.readouterr().err
  charts = tb.scalars_layout(config)['stability']
  assert len(charts) == len(stability.STATS)
  assert charts['max_attention_logit per layer'][1] == [r'^stability/max_attention_logit/.*$']


def test_the_warning_fires_past_the_threshold_once(capsys):
  """A huge init (std 3) puts the max logit far past MAX_LOGIT; the default init stays below
  (and a default run does not warn: the test above)."""
  huge = _scalars(models.build(models.HParams.from_config({**SMALL, 'init_std': 3.0}),
                               rngs=nnx.Rngs(0)))
  normal = _scalars(models.build(models.HParams.from_config(SMALL), rngs=nnx.Rngs(0)))
  assert max(v for t, v in huge.items() if 'max_attention_logit' in t) > stability.MAX_LOGIT
  assert stability.warning(normal, 1) is None
  hook = hooks.StabilityWarning()
  hook.watching = True
  hook.after_log(1, huge)
  hook.after_log(2, huge)   # once per run
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'largest attention logit' in err[0] and 'past 100' in err[0], err
