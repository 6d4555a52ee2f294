"""Hugging Face ViT in and out: random small ViTForImageClassification / ViTModel (torch, float32)
imported give the same logits and features within 1e-4; import-hf then export-hf gives every
tensor back bit for bit with the image processor's size, mean and std, which our preprocessing
uses (the same pixels as transformers' processor)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from transformer import export as export_cli  # pylint: disable=g-import-not-at-top
from transformer import import_hf, models, objectives
from transformer.hf import load

TOLERANCE = 1e-4
MEAN, STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]


def _config(**kw):
  return transformers.ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                intermediate_size=40, image_size=16, patch_size=4,
                                num_channels=3, layer_norm_eps=1e-12, **kw)


def _processor(size=16):
  return transformers.ViTImageProcessorPil(size={'height': size, 'width': size},
                                           image_mean=MEAN, image_std=STD)


def _save(model, path):
  torch.manual_seed(0)
  model.eval().save_pretrained(path)
  _processor().save_pretrained(path)
  return model


def _images(n=3, size=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _hf_pixels(images):
  return torch.tensor(_processor(images.shape[1])(list(images), return_tensors='np')[
      'pixel_values'])


def _classifier(path):
  """Our classification model holding an import's parameters (as init_from loads them)."""
  config, params, _ = load.import_params(path)
  hp = models.HParams.from_config(config.model, vocabulary=False)
  model = models.build(hp, head='classification', rngs=nnx.Rngs(0))
  nnx.update(model, nnx.State(params))
  return config, model


def test_vit_for_image_classification_logits_match(tmp_path):
  torch.manual_seed(0)
  hf_model = _save(transformers.ViTForImageClassification(_config(num_labels=5)), tmp_path)
  config, model = _classifier(tmp_path)
  assert (config.model.num_classes, config.data.image_size) == (5, 16)
  assert list(config.model.image_mean) == MEAN and list(config.model.image_std) == STD
  images = _images()
  with torch.no_grad():
    ref = hf_model(pixel_values=_hf_pixels(images)).logits.numpy()
  got = np.asarray(model(jnp.asarray(images)))
  error = float(np.abs(got - ref).max())
  print(f'\n[hf parity] vit: max abs logit error {error:.2e}')
  assert got.shape == ref.shape == (3, 5) and error < TOLERANCE


def test_vit_model_features_match(tmp_path):
  torch.manual_seed(1)
  hf_model = _save(transformers.ViTModel(_config()), tmp_path)
  _, model = load.from_pretrained(tmp_path)
  images = _images(seed=1)
  with torch.no_grad():
    ref = hf_model(pixel_values=_hf_pixels(images)).last_hidden_state.numpy()
  got = np.asarray(model(jnp.asarray(images)))
  assert got.shape == ref.shape == (3, 17, 24)
  assert float(np.abs(got - ref).max()) < TOLERANCE


def test_our_preprocessing_gives_the_processors_pixels(tmp_path):
  """An image of another size: resized as transformers' ViTImageProcessor resizes it."""
  torch.manual_seed(0)
  _save(transformers.ViTForImageClassification(_config(num_labels=5)), tmp_path)
  config, model = _classifier(tmp_path)
  config.data.seq_len = 17
  objective = objectives.get(config, None)
  image = np.random.default_rng(2).integers(0, 256, (20, 12, 3), dtype=np.uint8)
  ours = objective.eval_features({'image': image, 'label': 1}, None)['image']
  normalised = np.asarray(model.token_embed.normalise(jnp.asarray(ours[None])))[0]
  theirs = _processor()([image], return_tensors='np')['pixel_values'][0].transpose(1, 2, 0)
  np.testing.assert_allclose(normalised, theirs, atol=1e-5)


@pytest.mark.parametrize('cls', ['ViTForImageClassification', 'ViTModel'])
def test_import_then_export_is_bit_identical(tmp_path, cls):
  hf_dir, ours, out = tmp_path / 'hf', tmp_path / 'ours', tmp_path / 'out'
  torch.manual_seed(0)
  kwargs = {'num_labels': 4} if cls == 'ViTForImageClassification' else {}
  model = getattr(transformers, cls)(_config(**kwargs))
  if cls == 'ViTModel':
    model.pooler = None   # our 'lm' image model is the encoder's features (no pooler)
  _save(model, hf_dir)
  assert import_hf.main(['--from', str(hf_dir), '--workdir', str(ours)]) == 0
  assert export_cli.main(['--workdir', str(ours), '--to', str(out)]) == 0
  before = safetensors.numpy.load_file(hf_dir / 'model.safetensors')
  after = safetensors.numpy.load_file(out / 'model.safetensors')
  assert sorted(after) == sorted(before)
  for name, tensor in before.items():
    assert after[name].dtype == tensor.dtype and np.array_equal(after[name], tensor), name
  with open(out / 'preprocessor_config.json') as f:
    processor = json.load(f)
  assert processor['size'] == {'height': 16, 'width': 16}
  assert processor['image_mean'] == MEAN and processor['image_std'] == STD
  reloaded = getattr(transformers, cls).from_pretrained(out).eval()
  pixels = _hf_pixels(_images())
  with torch.no_grad():
    want, got = model(pixel_values=pixels), reloaded(pixel_values=pixels)
  key = 'logits' if cls == 'ViTForImageClassification' else 'last_hidden_state'
  np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
