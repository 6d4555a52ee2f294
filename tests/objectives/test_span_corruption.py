"""T5 span corruption: statistics, sentinel structure, exact reconstruction, fitting, loss."""

import numpy as np
import pytest

from transformer import objectives
from transformer.objectives import span_corruption as sc

SENTINELS = set(range(7, 39))


def _reconstruct(inputs, targets):
  """Put every span of `targets` back in place of its sentinel in `inputs`."""
  assert inputs[-1] == 1 and targets[-1] == 1
  spans, current = {}, None
  for t in targets[:-1]:
    if t in SENTINELS:
      current = t
      spans[current] = []
    else:
      spans[current].append(t)
  out = []
  for t in inputs[:-1]:
    out.extend(spans.pop(t) if t in SENTINELS else [t])
  assert not spans  # every span was used exactly once
  return out


def test_structure_and_exact_reconstruction(make_config, tokenizer):
  obj = objectives.get(make_config('span_corruption', 'encoder_decoder'), tokenizer)
  rng = np.random.default_rng(0)
  for n in [2, 3, 7, 20, 64, obj.text_chunk_len]:
    text = rng.integers(39, 100, size=n).astype(np.int32)
    f = obj.features({'text': text}, rng)
    inputs, targets = f['inputs'].tolist(), f['targets'].tolist()
    assert _reconstruct(inputs, targets) == text.tolist()
    in_sent = [t for t in inputs if t in SENTINELS]
    out_sent = [t for t in targets if t in SENTINELS]
    # Sentinels in order <extra_id_0>, <extra_id_1>, ..., the same in inputs and targets.
    assert in_sent == out_sent == list(range(7, 7 + len(in_sent))) and in_sent
    assert targets[0] == 7            # targets open with the first sentinel
    assert inputs[0] not in SENTINELS  # the chunk starts with text (T5's convention)
    assert inputs[-2] in SENTINELS     # and ends with noise
    # No two sentinels in a row: spans are separated by at least one text token.
    assert not any(a in SENTINELS and b in SENTINELS for a, b in zip(inputs, inputs[1:]))


def test_noise_density_and_mean_span_length():
  rng = np.random.default_rng(1)
  noise = spans = total = 0
  for _ in range(2000):
    mask = sc.noise_mask(141, 0.15, 3.0, 32, rng)
    total += mask.size
    noise += mask.sum()
    spans += np.sum(mask & ~np.concatenate([[False], mask[:-1]]))
  np.testing.assert_allclose(noise / total, 0.15, atol=0.005)
  np.testing.assert_allclose(noise / spans, 3.0, atol=0.1)


def test_span_lengths_vary_uniformly_over_compositions():
  rng = np.random.default_rng(2)
  lengths = np.concatenate([sc.random_composition(12, 4, rng) for _ in range(4000)])
  assert lengths.min() >= 1 and lengths.sum() == 12 * 4000
  # Uniform composition of 12 into 4 parts: P(part == 1) = C(10, 2) / C(11, 3) = 45/165.
  np.testing.assert_allclose(np.mean(lengths == 1), 45 / 165, atol=0.02)


@pytest.mark.parametrize('seq_len,targets_len,expected', [(512, 114, 568), (128, 32, None)])
def test_chunk_length_fits_both_streams(seq_len, targets_len, expected):
  n = sc.chunk_length(seq_len, targets_len, 0.15, 3.0, 32)
  if expected:
    assert n == expected  # T5's published numbers for inputs 512 / targets 114
  for m in range(1, n + 1):
    i, t = sc.corrupted_lengths(m, 0.15, 3.0, 32)
    assert i <= seq_len and t <= targets_len
  i, t = sc.corrupted_lengths(n + 1, 0.15, 3.0, 32)
  assert i > seq_len or t > targets_len


def test_features_fit_stream_lengths(make_config, tokenizer):
  obj = objectives.get(make_config('span_corruption', 'encoder_decoder', seq_len=64,
                                   targets_len=20), tokenizer)
  rng = np.random.default_rng(3)
  for _ in range(200):
    f = obj.features({'text': rng.integers(39, 100, size=200)}, rng)  # longer than a chunk
    assert len(f['inputs']) <= 64 and len(f['targets']) <= 20


def test_loss_feeds_targets_shifted_inside_segments(make_config, tokenizer, table, table_model,
                                                    packer):
  obj = objectives.get(make_config('span_corruption', 'encoder_decoder'), tokenizer)
  rng = np.random.default_rng(4)
  feats = [obj.features({'text': rng.integers(39, 100, size=n)}, rng) for n in (20, 30)]
  batch = {**packer(feats, 64, 'inputs'), **packer(feats, 40, 'targets')}
  loss, metrics = obj.loss_and_metrics(table_model, batch, deterministic=True)
  args, kwargs = table_model.calls[-1]
  decoder_inputs = np.asarray(args[0])
  t, segs = batch['targets'], batch['targets_segment_ids']
  for f, seg in zip(feats, (1, 2)):
    np.testing.assert_array_equal(decoder_inputs[0][segs[0] == seg], [0, *f['targets'][:-1]])
  np.testing.assert_array_equal(kwargs['decoder_segment_ids'], segs)
  np.testing.assert_array_equal(kwargs['inputs_segment_ids'], batch['inputs_segment_ids'])
  keep = segs > 0
  logits = table[decoder_inputs[keep]].astype(np.float64)
  xent = np.log(np.exp(logits).sum(-1)) - logits[np.arange(keep.sum()), t[keep]]
  np.testing.assert_allclose(loss, xent.mean(), rtol=1e-5)
  assert float(metrics['loss'][1]) == sum(len(f['targets']) for f in feats)


@pytest.mark.parametrize('objective', ['span_corruption', 'seq2seq'])
def test_decoder_inputs_start_from_model_decoder_start_id(make_config, tokenizer, table_model,
                                                          packer, objective):
  config = make_config(objective, 'encoder_decoder')
  config.model.decoder_start_id = 2             # what the HF import sets for BART
  obj = objectives.get(config, tokenizer)
  rng = np.random.default_rng(5)
  if objective == 'seq2seq':
    feats = [obj.features({'inputs': rng.integers(39, 100, size=n),
                           'targets': rng.integers(39, 100, size=n)}) for n in (5, 7)]
  else:
    feats = [obj.features({'text': rng.integers(39, 100, size=n)}, rng) for n in (20, 30)]
  batch = {**packer(feats, 64, 'inputs'), **packer(feats, 40, 'targets')}
  obj.loss_and_metrics(table_model, batch, deterministic=True)
  decoder_inputs = np.asarray(table_model.calls[-1][0][0])
  segs = batch['targets_segment_ids']
  for f, seg in zip(feats, (1, 2)):
    np.testing.assert_array_equal(decoder_inputs[0][segs[0] == seg], [2, *f['targets'][:-1]])
  np.testing.assert_array_equal(decoder_inputs[segs == 0], 0)


def test_predict_generates_from_the_first_example(make_config, tokenizer, fake_decoding, packer):
  obj = objectives.get(make_config('span_corruption', 'encoder_decoder'), tokenizer)
  feats = [obj.features({'text': np.arange(40, 60)}, 0), obj.features({'text': [70, 71, 72]}, 0)]
  batch = {**packer(feats, 64, 'inputs'), **packer(feats, 40, 'targets')}
  [s] = obj.predict(None, batch, tokenizer, max_new_tokens=4)
  assert s['reference'] == tokenizer.decode(feats[0]['targets'])
  assert s['input'] == tokenizer.decode(feats[0]['inputs'])
  assert s['prediction'] == 't60 t61 t62'
  np.testing.assert_array_equal(fake_decoding[0]['inputs'][0], feats[0]['inputs'])
  assert fake_decoding[0]['segs'].sum() == len(feats[0]['inputs'])
