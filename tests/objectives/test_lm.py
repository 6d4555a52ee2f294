"""Causal and prefix LM: layout, loss against a hand computation, prefix weights, samples."""

import numpy as np

from transformer import objectives


def _hand_loss(table, tokens, segs, weight_fn):
  """Mean next-token cross-entropy over pairs (b, i) with weight_fn(b, i) true."""
  total, count = 0.0, 0
  for b in range(tokens.shape[0]):
    for i in range(tokens.shape[1] - 1):
      if weight_fn(b, i):
        logits = table[tokens[b, i]].astype(np.float64)
        total += np.log(np.exp(logits).sum()) - logits[tokens[b, i + 1]]
        count += 1
  return total / count, count


def test_causal_layout(make_config, tokenizer):
  obj = objectives.get(make_config('causal_lm', 'decoder', seq_len=8), tokenizer)
  assert obj.stream_lengths == {'targets': 8} and obj.text_chunk_len == 6
  f = obj.features({'text': np.array([40, 41, 42])})
  np.testing.assert_array_equal(f['targets'], [3, 40, 41, 42, 1])
  assert len(obj.features({'text': np.arange(40, 60)})['targets']) == 8


def test_causal_loss_ignores_padding_and_segment_boundaries(make_config, tokenizer, table,
                                                            table_model, packer):
  obj = objectives.get(make_config('causal_lm', 'decoder', seq_len=16), tokenizer)
  feats = [obj.features({'text': np.arange(40, 40 + n)}) for n in (5, 4, 9, 3)]
  batch = packer(feats, 16, 'targets')
  assert batch['targets'].shape == (2, 16) and batch['targets_segment_ids'].max() == 2
  loss, metrics = obj.loss_and_metrics(table_model, batch, deterministic=True)
  segs = batch['targets_segment_ids']
  expected, count = _hand_loss(table, batch['targets'], segs,
                               lambda b, i: segs[b, i] != 0 and segs[b, i + 1] == segs[b, i])
  # Each example of n text tokens has n + 2 tokens and n + 1 predictions.
  assert count == sum(n + 1 for n in (5, 4, 9, 3)) == float(metrics['loss'][1])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # Garbage in the padding, and a model that would "know" the next segment, change nothing.
  poisoned = {k: v.copy() for k, v in batch.items()}
  poisoned['targets'][segs == 0] = 99
  loss2, _ = obj.loss_and_metrics(table_model, poisoned, deterministic=True)
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  assert 'prefix' not in table_model.calls[-1][1]


def test_prefix_layout_and_weights(make_config, tokenizer, table, table_model, packer):
  obj = objectives.get(make_config('prefix_lm', 'decoder', seq_len=16, prefix_fraction=0.5),
                       tokenizer)
  f = obj.features({'text': np.arange(40, 46)})
  np.testing.assert_array_equal(f['targets'], [3, 40, 41, 42, 43, 44, 45, 1])
  np.testing.assert_array_equal(f['targets_prefix'], [1, 1, 1, 1, 0, 0, 0, 0])
  # At least one text token on each side of the split, even at extreme fractions.
  for frac in (0.01, 0.99):
    o = objectives.get(make_config('prefix_lm', 'decoder', prefix_fraction=frac), tokenizer)
    p = o.features({'text': np.arange(40, 44)})['targets_prefix']
    assert 2 <= p.sum() <= 4
  feats = [obj.features({'text': np.arange(40, 40 + n)}) for n in (6, 5, 10)]
  batch = packer(feats, 16, 'targets')
  loss, metrics = obj.loss_and_metrics(table_model, batch, deterministic=True)
  segs, prefix = batch['targets_segment_ids'], batch['targets_prefix']
  expected, count = _hand_loss(
      table, batch['targets'], segs,
      lambda b, i: segs[b, i] != 0 and segs[b, i + 1] == segs[b, i] and not prefix[b, i + 1])
  assert count == float(metrics['loss'][1]) == sum(n - round(n / 2) + 1 for n in (6, 5, 10))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_array_equal(table_model.calls[-1][1]['prefix'], prefix)


def test_causal_predict_continues_first_half(make_config, tokenizer, fake_decoding, packer):
  obj = objectives.get(make_config('causal_lm', 'decoder', seq_len=16), tokenizer)
  feats = [obj.features({'text': np.arange(40, 46)}), obj.features({'text': np.arange(70, 80)})]
  batch = packer(feats, 16, 'targets')  # two rows: 8 + 12 tokens do not fit 16
  samples = obj.predict(None, batch, tokenizer, max_new_tokens=3)
  assert [s['input'] for s in samples] == ['t3 t40 t41 t42', 't3 t70 t71 t72 t73 t74']
  assert samples[0]['reference'] == 't43 t44 t45'
  assert samples[0]['prediction'] == 't50 t51 t52'
  assert [c['prompt'].shape for c in fake_decoding] == [(1, 4), (1, 6)]
  assert not any(c['prefix_lm'] for c in fake_decoding)


def test_prefix_predict_prompts_with_the_prefix(make_config, tokenizer, fake_decoding):
  obj = objectives.get(make_config('prefix_lm', 'decoder', seq_len=16), tokenizer)
  f = obj.features({'text': np.arange(40, 46)})
  batch = {'targets': f['targets'][None], 'targets_prefix': f['targets_prefix'][None],
           'targets_segment_ids': np.ones((1, 8), np.int32),
           'targets_positions': np.arange(8)[None]}
  [s] = obj.predict(None, batch, tokenizer, max_new_tokens=2)
  assert s['input'] == 't3 t40 t41 t42' and s['reference'] == 't43 t44 t45'
  assert fake_decoding[0]['prefix_lm']
