"""muP (`model.mup_base_width`, Yang et al. 2022 Table 8 for Adam): the init, attention scale and
readout multiplier of the model, the learning-rate multipliers of training/optim.py, the config
refusals, and the coordinate check: activation scales stay flat across widths over the first 10
AdamW steps under muP and grow with width under the default parametrization."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from transformer import config as config_lib
from transformer import models
from transformer.errors import ConfigError
from transformer.monitoring import stability
from transformer.training import optim

WIDTHS = (64, 128, 256)


def _model(width, base, seed=0, **extra):
  hp = models.HParams.from_config(dict(vocab_size=128, num_layers=1, d_model=width, num_heads=4,
                                       d_ff=4 * width, max_len=16, mup_base_width=base, **extra))
  return models.build(hp, rngs=nnx.Rngs(seed))


def test_the_base_width_is_the_default_model_and_wider_ones_scale():
  tokens = jnp.arange(12).reshape(2, 6)
  np.testing.assert_array_equal(_model(64, 64)(tokens), _model(64, 0)(tokens))
  model = _model(256, 64)
  attention = model.decoder.layers[0].self_attention
  assert attention.scale == pytest.approx(1 / 64 * 16 ** 0.5)   # sqrt(base head_dim) / head_dim
  for kernel in (attention.query.kernel, model.decoder.layers[0].mlp.wo.kernel):
    assert float(jnp.std(kernel.value)) == pytest.approx(0.02 / 2, rel=0.05)
  assert float(jnp.std(model.token_embed.embedding.value)) == pytest.approx(0.02, rel=0.05)
  x = jax.random.normal(jax.random.key(0), (1, 3, 256))
  default = _model(256, 0).lm_head(x, model.token_embed)
  np.testing.assert_allclose(model.lm_head(x, model.token_embed), default / 4, rtol=1e-5)


def _opt(optimizer='adamw'):
  opt = common.base_config().opt
  opt.update(dict(optimizer=optimizer, learning_rate=1e-2, warmup_steps=0, schedule='constant',
                  weight_decay=0.1, grad_clip_norm=0.0))
  return opt


@pytest.mark.parametrize('optimizer', ['adamw', 'lion'])
def test_hidden_matrices_learn_at_lr_over_the_width_ratio(optimizer):
  params = nnx.to_pure_dict(nnx.state(_model(64, 0), nnx.Param))
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  opt = _opt(optimizer)
  plain = optim.transform(opt, optax.constant_schedule(1e-2))
  mup = optim.transform(opt, optax.constant_schedule(1e-2), mup_ratio=4.0)
  want, _ = plain.update(grads, plain.init(params), params)
  got, _ = mup.update(grads, mup.init(params), params)
  flat = lambda t: {models.path_name(p): np.asarray(v)
                    for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  want, got = flat(want), flat(got)
  hidden = [p for p in want if optim.mup_hidden(p.split('/'))]
  assert 'decoder/layers/0/mlp/wi/kernel' in hidden and len(hidden) == 6, hidden
  for path in want:
    scale = 0.25 if path in hidden else 1.0   # embeddings, biases, norms: opt.learning_rate
    np.testing.assert_allclose(got[path], want[path] * scale, rtol=1e-6, err_msg=path)


@pytest.mark.parametrize('override, names', [
    ({'opt.optimizer': 'muon'}, 'opt.optimizer=muon'),
    ({'opt.optimizer': 'adafactor'}, 'opt.optimizer=adafactor'),
    ({'model.scale_attention': 'false'}, '`model.mup_base_width=64`'),
    ({'model.mup_base_width': '-1'}, 'model.mup_base_width=-1')])
def test_mup_is_refused_where_it_is_not_defined(override, names):
  with pytest.raises(ConfigError) as e:
    config_lib.load('configs/gpt2.py:tiny', {'model.mup_base_width': '64', **override})
  assert names in str(e.value) and '\n' not in str(e.value)


def _coordinates(width, base, lr=1e-2, steps=10):
  """Per step 1..steps (the forward pass before that step's update): {stat: value}."""
  model = _model(width, base)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  opt = _opt()
  tx = optim.transform(opt, optax.constant_schedule(lr), models.HParams.from_config(
      dict(d_model=width, mup_base_width=base, vocab_size=1)).mup_ratio)
  tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 128)

  def loss_fn(params):
    m = nnx.merge(graphdef, params, rest)
    stability.enable(m)
    logits = m(tokens[:, :-1])
    sown = stability.sown_scalars(nnx.pop(m, nnx.Intermediate), ('decoder',))
    stats = {k.split('/')[1]: v for k, (v, _) in sown.items()}
    stats['output_logits_rms'] = jnp.sqrt(jnp.mean(jnp.square(logits)))
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))
    return loss, stats

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), stats
    return jax.lax.scan(step, (params, tx.init(params)), None, length=steps)[1]
  return jax.device_get(run(params))


def _slopes(base):
  """{stat: slope of mean log(value) over steps 1..10 against log(width)}."""
  per_width = [_coordinates(w, base) for w in WIDTHS]
  return {k: np.polyfit(np.log(WIDTHS), [np.mean(np.log(c[k])) for c in per_width], 1)[0]
          for k in ('residual_rms', 'max_attention_logit', 'output_logits_rms')}


@pytest.mark.slow   # ~18 s of CPU: six widths x settings compiled
def test_coordinate_check_flat_under_mup_growing_without():
  mup, default = _slopes(64), _slopes(0)
  for stat in ('residual_rms', 'max_attention_logit', 'output_logits_rms'):   # ~-0.1 .. -0.2
    assert abs(mup[stat]) < 0.5, (stat, mup, default)
  assert default['output_logits_rms'] > 0.5, default   # ~0.8
  assert default['residual_rms'] > 1.0, default   # ~1.9
  assert default['max_attention_logit'] > 1.0, default   # ~1.7
