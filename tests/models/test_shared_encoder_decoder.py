"""model.share_encoder_decoder (T5 Table 2's "shared" encoder-decoder): decoder block i reuses
encoder block i's self-attention, MLP and norms; the parameters exist, train and count once."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from transformer import models
from transformer.errors import ConfigError
from transformer.models import blocks
from transformer.monitoring import accounting


def _tiny(**overrides):
  base = dict(family='encoder_decoder', vocab_size=31, num_layers=2, d_model=32, num_heads=4,
              d_ff=64, max_len=32, positions='relative')
  return common.model_config(**{**base, **overrides})


def _inputs():
  k1, k2 = jax.random.split(jax.random.key(0))
  return jax.random.randint(k1, (2, 9), 1, 31), jax.random.randint(k2, (2, 7), 1, 31)


def _params(model):
  return dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def _at(module, path):
  """The variable at `path` reached by attributes, so a shared module is found on either path."""
  for name in path:
    module = module[name] if isinstance(name, int) else getattr(module, name)
  return module


def test_shared_model_equals_unshared_with_copied_weights():
  shared = models.build(_tiny(share_encoder_decoder=True), rngs=nnx.Rngs(0))
  plain = models.build(_tiny(), rngs=nnx.Rngs(1))
  args = _inputs()
  assert not np.allclose(shared(*args), plain(*args), atol=1e-3)
  new = {}
  for path, var in _params(plain).items():
    source = path
    if path[0] == 'decoder' and path[1] == 'layers' and path[3] in blocks.SHARED_SUBLAYERS:
      source = ('encoder',) + path[1:]   # decoder layer i = encoder layer i in the shared model
    new[path] = var.replace(_at(shared, source)[...])
  nnx.update(plain, nnx.State.from_flat_path(new))
  np.testing.assert_allclose(shared(*args), plain(*args), atol=1e-5, rtol=1e-5)


def test_shared_parameters_are_counted_once():
  config = common.base_config()
  config.model = _tiny()
  plain = accounting.count_params(accounting.abstract_model(config))
  config.model.share_encoder_decoder = True
  shared = accounting.count_params(accounting.abstract_model(config))
  stacks = lambda c, part: sum(v for k, v in c.items() if k.endswith(part))
  for part in ('/attention', '/mlp'):   # one stack's worth instead of two
    assert stacks(shared, part) * 2 == stacks(plain, part)
  assert shared['decoder/cross_attention'] == plain['decoder/cross_attention']
  assert shared['embeddings'] == plain['embeddings']
  flops_shared = accounting.flops_per_token(config)['total_train']
  config.model.share_encoder_decoder = False
  assert flops_shared == accounting.flops_per_token(config)['total_train']   # same compute


def test_shared_model_trains_and_the_tied_weights_stay_equal():
  model = models.build(_tiny(share_encoder_decoder=True), rngs=nnx.Rngs(0))
  inputs, targets = _inputs()
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  def loss_fn(m):
    logits = m(inputs, targets)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @nnx.jit
  def step(m, opt):
    loss, grads = nnx.value_and_grad(loss_fn)(m)
    opt.update(m, grads)
    return loss
  first = float(step(model, optimizer))
  for _ in range(20):
    last = float(step(model, optimizer))
  assert last < 0.5 * first
  assert model.decoder.layers[1].mlp is model.encoder.layers[1].mlp   # still one module
  assert model.decoder.layers[0].encoder_decoder_attention is not None


@pytest.mark.parametrize('overrides', [dict(family='decoder'), dict(num_decoder_layers=3),
                                       dict(scan_layers=True)])
def test_share_needs_matching_encoder_decoder_stacks(overrides):
  with pytest.raises(ConfigError, match='model.share_encoder_decoder'):
    models.build(_tiny(share_encoder_decoder=True, **overrides), rngs=nnx.Rngs(0))


@pytest.mark.parametrize('strategy', ['greedy', pytest.param('beam', marks=pytest.mark.slow)])
def test_shared_model_decodes_with_caches_as_without(strategy):
  """Decoder caches live in the shared self-attention modules; the encoder never reads them."""
  from transformer.models import decoding  # pylint: disable=import-outside-toplevel
  model = models.build(_tiny(share_encoder_decoder=True, init_std=0.3), rngs=nnx.Rngs(7))
  inputs = np.array([[11, 7, 19, 4, 9], [13, 21, 6, 0, 0]], np.int32)
  spec = decoding.Spec() if strategy == 'greedy' else decoding.Spec('beam', beam_size=3)
  run = lambda cache: decoding.decode(model, inputs, segment_ids=(inputs > 0).astype(np.int32),
                                      max_new_tokens=5, eos_id=1, spec=spec, cache=cache)
  cached, full = run('full'), run('none')
  np.testing.assert_array_equal(cached.tokens, full.tokens)
  np.testing.assert_allclose(cached.scores, full.scores, atol=1e-4, rtol=1e-4)


def test_export_hf_refuses_a_shared_model():
  """Hugging Face's T5 and BART have no shared encoder/decoder layers: one line, not a bad file."""
  from transformer.hf import architectures  # pylint: disable=import-outside-toplevel
  config = common.base_config()
  config.model = _tiny(share_encoder_decoder=True, norm='rmsnorm', use_bias=False,
                       scale_attention=False, scale_tied_logits=True, activation='relu')
  hp = models.HParams.from_config(config.model)
  with pytest.raises(ConfigError, match='model.share_encoder_decoder=True'):
    architectures.architecture(hp, 'lm')
  config.model.share_encoder_decoder = False
  assert architectures.architecture(models.HParams.from_config(config.model), 'lm')[0] == 't5'
