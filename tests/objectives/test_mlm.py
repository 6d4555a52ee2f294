"""BERT masking statistics, specials never touched, loss only on chosen tokens, samples."""

import jax.numpy as jnp
import numpy as np

from transformer import objectives
from transformer.objectives import mlm


def _sample(obj, n_examples=3000, length=100, seed=0):
  rng = np.random.default_rng(seed)
  data = rng.integers(39, 100, size=(n_examples, length)).astype(np.int32)
  data[:, ::10] = 2      # <unk> inside the text: special, never chosen
  data[:, 5::10] = 20    # a sentinel inside the text: special, never chosen
  feats = [obj.features({'text': row}, rng) for row in data]
  return data, feats


def test_layout_is_cls_text_sep(make_config, tokenizer):
  obj = objectives.get(make_config('mlm', 'encoder', seq_len=16), tokenizer)
  assert obj.text_chunk_len == 14 and obj.stream_lengths == {'inputs': 16}
  f = obj.features({'text': np.arange(40, 60)}, np.random.default_rng(0))  # too long: cut
  assert len(f['inputs']) == 16 and f['inputs'][0] == 6 and f['inputs'][-1] == 5
  restored = np.where(f['inputs_labels'] > 0, f['inputs_labels'], f['inputs'])
  np.testing.assert_array_equal(restored, [6, *range(40, 54), 5])


def test_bert_80_10_10_and_15_percent(make_config, tokenizer):
  obj = objectives.get(make_config('mlm', 'encoder', seq_len=128), tokenizer)
  data, feats = _sample(obj)
  inputs = np.stack([f['inputs'] for f in feats])[:, 1:-1]
  labels = np.stack([f['inputs_labels'] for f in feats])[:, 1:-1]
  chosen = labels > 0
  ordinary = data >= 39
  # The rate: 15% of ordinary tokens in every example (exact budget), none of the specials.
  np.testing.assert_allclose(chosen.sum(1) / ordinary.sum(1), 0.15, atol=0.01)
  assert not chosen[~ordinary].any()
  np.testing.assert_array_equal(inputs[~ordinary], data[~ordinary])
  np.testing.assert_array_equal(labels[chosen], data[chosen])
  assert (inputs[~chosen] == data[~chosen]).all()
  # The split of chosen tokens: 80% mask, 10% random (may equal the original 1/61), 10% same.
  picked_in, picked_orig = inputs[chosen], data[chosen]
  n = picked_in.size
  assert n > 30000
  frac_mask = np.mean(picked_in == 4)
  frac_random = np.mean((picked_in != 4) & (picked_in != picked_orig))
  frac_same = np.mean(picked_in == picked_orig)
  np.testing.assert_allclose(frac_mask, 0.8, atol=0.01)
  np.testing.assert_allclose(frac_random, 0.1 * 60 / 61, atol=0.01)
  np.testing.assert_allclose(frac_same, 0.1 + 0.1 / 61, atol=0.01)
  # Random replacements are ordinary tokens, roughly uniform over them.
  replaced = picked_in[(picked_in != 4) & (picked_in != picked_orig)]
  assert replaced.min() >= 39 and replaced.max() <= 99
  assert len(np.unique(replaced)) == 61


def test_short_text_still_masks_one_token_and_empty_text_masks_none(make_config, tokenizer):
  obj = objectives.get(make_config('mlm', 'encoder'), tokenizer)
  f = obj.features({'text': np.array([50, 51])}, 0)
  assert (f['inputs_labels'] > 0).sum() == 1
  f = obj.features({'text': np.array([], np.int32)}, 0)
  np.testing.assert_array_equal(f['inputs'], [6, 5])
  assert not f['inputs_labels'].any()


def test_loss_only_on_chosen_tokens(make_config, tokenizer, table_model, table, packer):
  obj = objectives.get(make_config('mlm', 'encoder', seq_len=32), tokenizer)
  rng = np.random.default_rng(1)
  feats = [obj.features({'text': rng.integers(39, 100, size=n)}, rng) for n in (12, 9, 20)]
  batch = packer(feats, 32, 'inputs')
  loss, metrics = obj.loss_and_metrics(table_model, batch, deterministic=True)
  # Hand computation: positions with a label, logits = table[input token].
  chosen = batch['inputs_labels'] > 0
  logits = table[batch['inputs'][chosen]].astype(np.float64)
  xent = np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(logits)),
                                                 batch['inputs_labels'][chosen]]
  np.testing.assert_allclose(loss, xent.mean(), rtol=1e-5)
  assert float(metrics['loss'][1]) == chosen.sum()
  acc = (logits.argmax(-1) == batch['inputs_labels'][chosen]).sum()
  assert float(metrics['accuracy'][0]) == acc


def test_predict_shows_mask_fills_and_original(make_config, tokenizer, packer):
  obj = objectives.get(make_config('mlm', 'encoder', seq_len=32), tokenizer)
  feats = [obj.features({'text': np.arange(40, 50)}, 3), obj.features({'text': [60, 61]}, 3)]
  batch = packer(feats, 32, 'inputs')

  def always_77(tokens, *args, **kwargs):
    return jnp.eye(100)[jnp.full(tokens.shape, 77)]

  samples = obj.predict(always_77, batch, tokenizer)
  assert len(samples) == 1  # both examples share row 0; the first one is sampled
  s = samples[0]
  assert s['reference'] == 't6 ' + ' '.join(f't{i}' for i in range(40, 50)) + ' t5'
  labels = feats[0]['inputs_labels']
  expected = np.where(labels > 0, 77, feats[0]['inputs'])
  assert s['prediction'] == tokenizer.decode(expected)
  assert s['input'] == tokenizer.decode(feats[0]['inputs'])


def test_constants_are_bert():
  assert mlm.MASK_FRACTION == 0.8 and mlm.RANDOM_FRACTION == 0.1
