"""Every objective with a real tiny model: jitted loss, finite gradients, and real decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer import models
from transformer import objectives

CASES = [('mlm', 'encoder'), ('causal_lm', 'decoder'), ('prefix_lm', 'decoder'),
         ('span_corruption', 'encoder_decoder'),
         # Same encoder_decoder_loss as span corruption: slow lane only, to keep this file fast.
         pytest.param('seq2seq', 'encoder_decoder', marks=pytest.mark.slow),
         ('seq2seq', 'decoder'), ('classification', 'encoder'), ('classification', 'decoder')]


def _examples(obj, rng, count=6):
  out = []
  for _ in range(count):
    n = int(rng.integers(3, 9))
    text = rng.integers(39, 100, size=n).astype(np.int32)
    if obj.example_fields == ('inputs', 'targets'):
      out.append(dict(inputs=text, targets=rng.integers(39, 100, size=n // 2 + 1)))
    elif obj.example_fields == ('text', 'label'):
      out.append(dict(text=text, label=int(rng.integers(0, 2))))
    else:
      out.append(dict(text=text))
  return out


_MODELS = {}


def _model(cfg, head):
  """One tiny model per (family, head), shared by the objectives that use it (builds are slow)."""
  key = (cfg.model.family, head)
  if key not in _MODELS:
    cfg.model.update(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_len=64)
    _MODELS[key] = models.build(cfg.model, head=head, rngs=nnx.Rngs(params=0, dropout=1))
  return _MODELS[key]


def _batch(obj, examples, rng, packer):
  """Packs the features of `examples` stream by stream (all fit one row per stream here)."""
  feats = [obj.features(e, rng) for e in examples]
  if not obj.packable:  # one example per row, padded
    batch = {}
    for stream, length in obj.stream_lengths.items():
      for f in feats:
        for k, v in packer([f], length, stream).items():
          batch.setdefault(k, []).append(v[0])
    batch = {k: np.stack(v) for k, v in batch.items()}
    batch['label'] = np.asarray([f['label'] for f in feats], np.int32)
    return batch
  batch = {}
  for stream, length in obj.stream_lengths.items():
    batch.update(packer(feats, length, stream))
  return batch


def _setup(objective, family, make_config, tokenizer, packer):
  """(config, objective, tiny model, one packed batch of random examples) for one case."""
  cfg = make_config(objective, family, seq_len=48, targets_len=32)
  obj = objectives.get(cfg, tokenizer)
  rng = np.random.default_rng(0)
  return cfg, obj, _model(cfg, obj.head), _batch(obj, _examples(obj, rng), rng, packer)


@pytest.mark.parametrize('objective,family', CASES)
def test_jitted_loss_and_finite_grads(objective, family, make_config, tokenizer, packer):
  cfg, obj, model, batch = _setup(objective, family, make_config, tokenizer, packer)
  assert all(v.shape[0] == batch[next(iter(obj.stream_lengths))].shape[0]
             for v in batch.values())
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def step(params, batch):
    def loss_fn(params):
      m = nnx.merge(graphdef, params, rest)
      return obj.loss_and_metrics(m, batch, deterministic=True)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, metrics), grads = step(params, batch)
  assert np.isfinite(float(loss)) and float(loss) > 0
  # At initialisation the loss is near log(vocab) (or log(classes)) per scored token.
  expected = np.log(2 if objective == 'classification' else 100)
  assert 0.3 * expected < float(metrics['loss'][0] / metrics['loss'][1]) < 3 * expected
  leaves = jax.tree.leaves(grads)
  assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


@pytest.mark.slow  # compiles a generation loop per case: ~3 s each on 2 cores
@pytest.mark.parametrize('objective,family', [('causal_lm', 'decoder'), ('seq2seq', 'decoder'),
                                              ('span_corruption', 'encoder_decoder'),
                                              ('mlm', 'encoder')])
def test_predict_with_real_decoding(objective, family, make_config, tokenizer, packer):
  cfg, obj, model, batch = _setup(objective, family, make_config, tokenizer, packer)
  samples = obj.predict(model, batch, tokenizer, max_new_tokens=4)
  assert 1 <= len(samples) <= cfg.log.samples  # the first example of each sampled row
  s = samples[0]
  assert set(s) == {'input', 'prediction', 'reference'}
  assert all(isinstance(v, str) for v in s.values()) and s['input'] and s['reference']
