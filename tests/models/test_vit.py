"""ViT (models/patches.py on the shared encoder): the patch embedding is the paper's strided
convolution, the paper's sizes have their published parameter counts, positions interpolate in
2-D, and scan, mixed precision and the sharding presets work as for the text families."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from configs import common
from transformer import config as config_lib
from transformer import models
from transformer.errors import ConfigError
from transformer.models import patches
from transformer.monitoring import accounting
from transformer.training import sharding
from tests.models.test_models import _copy_into_scanned


def _hp(**overrides):
  base = dict(family='encoder', vocab_size=0, num_layers=1, d_model=32, num_heads=4, d_ff=64,
              patch_size=4, image_size=16, num_channels=3, num_classes=7,
              positions='learned_2d', norm_position='pre')
  return models.HParams.from_config(common.model_config(**{**base, **overrides}),
                                    vocabulary=False)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape), jnp.uint8)


def test_patch_embedding_equals_the_strided_convolution():
  hp = _hp(patch_size=4, num_channels=3, d_model=24)
  embed = patches.PatchEmbed(hp, rngs=nnx.Rngs(0))
  embed.projection.bias.value = jax.random.normal(jax.random.key(1), (24,))
  images = _images((2, 16, 12, 3))
  ours = embed.patches(images)                                   # [B, 4 * 3, D]
  x = embed.normalise(images)
  conv = jax.lax.conv_general_dilated(x, embed.projection.kernel.value, window_strides=(4, 4),
                                      padding='VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision='highest')
  conv = conv + embed.projection.bias.value                     # [B, 4, 3, D], row order
  np.testing.assert_allclose(ours, conv.reshape(2, 12, 24), atol=1e-5, rtol=1e-5)


# Parameters at 224 x 224 with a 1000-class head; B/16 and L/16 equal Hugging Face's
# ViTForImageClassification (google/vit-base-patch16-224: 86,567,656), the paper's 86M and 307M.
VIT_COUNTS = [('tiny', 136_138), ('ti16', 5_717_416), ('s16', 22_050_664),
              ('b16', 86_567_656), ('l16', 304_326_632)]


@pytest.mark.parametrize('size,count', VIT_COUNTS)
def test_published_sizes(size, count):
  config = config_lib.load(f'configs/vit.py:{size}')
  counts = accounting.count_params(accounting.abstract_model(config))
  assert counts['total'] == count
  hp = accounting.hparams(config)
  # the embeddings: patch projection, class token and the position table of 14 x 14 + 1 rows
  side = hp.image_size // hp.patch_size
  p, d = hp.patch_size, hp.d_model
  assert counts['embeddings'] == p * p * hp.num_channels * d + d + d + (side * side + 1) * d
  assert config.data.seq_len == side * side + 1
  assert accounting.unit(config) == ('patch', 'patches')


def test_seq_len_follows_image_size_and_patch_size():
  config = config_lib.load('configs/vit.py:b16', {'data.image_size': '384'})
  assert config.data.seq_len == 24 * 24 + 1
  config = config_lib.load('configs/vit.py:b16', {'model.patch_size': '32'})
  assert config.data.seq_len == 7 * 7 + 1


def test_positions_interpolate_in_2d_at_another_resolution():
  hp = _hp(image_size=16, patch_size=4)        # a 4 x 4 table (+ the class token's row)
  embed = patches.PatchEmbed(hp, rngs=nnx.Rngs(0))
  table = embed.position_embedding.value
  assert table.shape == (17, 32)
  same = patches.interpolate(table[1:].reshape(4, 4, 32), 4, 4)
  np.testing.assert_array_equal(same, table[1:].reshape(4, 4, 32))
  images = _images((1, 24, 32, 3))               # 6 x 8 patches: the table resized to 6 x 8
  got = embed(images)
  assert got.shape == (1, 1 + 48, 32)
  resized = jax.image.resize(table[1:].reshape(4, 4, 32), (6, 8, 32), 'bicubic')
  np.testing.assert_allclose(got[0, 1:], embed.patches(images)[0] + resized.reshape(48, 32),
                             atol=1e-5)
  np.testing.assert_allclose(got[0, 0], embed.class_token.value[0] + table[0], atol=1e-6)
  # a constant table stays constant; the gradient reaches every row of the table
  flat = patches.interpolate(jnp.ones((4, 4, 2)), 7, 5)
  np.testing.assert_allclose(flat, np.ones((7, 5, 2)), atol=1e-5)
  grad = jax.grad(lambda t: jnp.sum(patches.interpolate(t, 6, 8) ** 2))(table[1:].reshape(4, 4, 32))
  assert np.all(np.abs(grad).sum(-1) > 0)


@pytest.mark.slow
def test_class_token_or_average_pooling():
  images = _images((3, 16, 16, 3))
  for pooling, length in (('cls', 17), ('gap', 16)):
    hp = _hp(pooling=pooling)
    features = models.build(hp, head='lm', rngs=nnx.Rngs(0))(images)
    assert features.shape == (3, length, 32)
    model = models.build(hp, head='classification', rngs=nnx.Rngs(0))
    logits = model(images)
    assert logits.shape == (3, 7)
    pooled = patches.pool(features, hp)
    np.testing.assert_allclose(pooled, features[:, 0] if pooling == 'cls' else features.mean(1),
                               atol=1e-6)


def test_attention_is_bidirectional_over_every_patch():
  """Each output depends on every patch (no causal mask, no packing)."""
  hp = _hp()
  model = models.build(hp, head='lm', rngs=nnx.Rngs(0))
  x = jnp.asarray(_images((1, 16, 16, 3)), jnp.float32)
  grad = jax.grad(lambda im: jnp.sum(model(im)[0, 1]))(x)   # the first patch's output
  per_patch = jnp.abs(grad[0]).reshape(4, 4, 4, 4, 3).sum(axis=(1, 3, 4))
  assert np.all(per_patch > 0)


@pytest.mark.slow
def test_scan_and_bfloat16_match_the_unrolled_float32_model():
  images = _images((2, 16, 16, 3))
  hp = _hp(num_layers=2)
  ref = models.build(hp, head='classification', rngs=nnx.Rngs(0))(images)
  scanned = models.build(dataclasses.replace(hp, scan_layers=True), head='classification',
                         rngs=nnx.Rngs(0))
  _copy_into_scanned(models.build(hp, head='classification', rngs=nnx.Rngs(0)), scanned)
  np.testing.assert_allclose(scanned(images), ref, atol=1e-5)
  mixed = models.build(dataclasses.replace(hp, dtype='bfloat16'), head='classification',
                       rngs=nnx.Rngs(0))(images)
  assert mixed.dtype == jnp.float32
  np.testing.assert_allclose(mixed, ref, atol=0.1)


@pytest.mark.parametrize('preset,where', [('fsdp', {'embed': 'fsdp'}),
                                          ('tensor', {'heads': 'tensor', 'mlp': 'tensor'})])
def test_sharding_presets_place_the_image_model(preset, where):
  hp = _hp()
  abstract = nnx.eval_shape(lambda: models.build(hp, head='classification', rngs=nnx.Rngs(0)))
  mesh = sharding.make_mesh(common.base_config().mesh)
  shardings = sharding.param_shardings(nnx.state(abstract, nnx.Param), mesh, preset)
  specs = {models.path_name(p): s.spec for p, s in
           jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(shardings))[0]}
  projection = specs['token_embed/projection/kernel']
  assert projection == PartitionSpec(None, None, None, where.get('embed'))
  assert specs['token_embed/position_embedding'] == PartitionSpec(None, where.get('embed'))
  assert specs['encoder/layers/0/mlp/wi/kernel'] == PartitionSpec(where.get('embed'),
                                                                  where.get('mlp'))


@pytest.mark.parametrize('overrides,key', [
    (dict(positions='learned'), 'model.positions'),
    (dict(family='decoder'), 'model.family'),
    (dict(patch_size=5), 'model.patch_size'),
    (dict(pooling='max'), 'model.pooling'),
    (dict(image_mean=(0.5,)), 'model.image_mean'),
    (dict(patch_size=0), 'model.positions'),
])
def test_bad_image_model_keys(overrides, key):
  with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
    _hp(**overrides)
