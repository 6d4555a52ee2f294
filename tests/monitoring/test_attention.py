"""Attention diagnostics on hand-made weights with known entropy and distance, the example the
pictures show, the pictures, and the capture of every layer of every family from real models."""

import math

import numpy as np
import pytest

from transformer import config as config_lib
from transformer.models.attention import attention_mask
from transformer.monitoring import attention
from transformer.monitoring import attention_plot
from transformer.training import setup


def _causal(t):
  return np.tril(np.ones((t, t), bool))


def _uniform(mask_TS):
  return mask_TS / mask_TS.sum(-1, keepdims=True)


def _map(name, weights_NTS, mask_TS, kind='causal'):
  return attention.AttentionMap(name=name, kind=kind, stream_q='decoder', stream_k='decoder',
                                weights=np.asarray(weights_NTS, np.float32)[None],
                                mask=np.asarray(mask_TS)[None])


def test_uniform_bidirectional_head():
  n = 8
  mask = np.ones((1, n, n), bool)
  stats = attention.head_stats(_uniform(mask[0])[None, None], mask)
  np.testing.assert_allclose(stats['entropy'], [math.log(n)], rtol=1e-6)
  np.testing.assert_allclose(stats['normalized_entropy'], [1.0], rtol=1e-6)
  np.testing.assert_allclose(stats['max_weight'], [1 / n], rtol=1e-6)
  # mean |i - j| over all pairs of 0..n-1 is (n^2 - 1) / (3n)
  np.testing.assert_allclose(stats['distance'], [(n * n - 1) / (3 * n)], rtol=1e-6)


def test_uniform_causal_head_skips_the_query_with_one_key():
  t = 6
  mask = _causal(t)
  stats = attention.head_stats(_uniform(mask)[None, None], mask[None])
  queries = range(1, t)   # query 0 sees only itself: nothing to choose, not counted
  np.testing.assert_allclose(stats['entropy'], [np.mean([math.log(i + 1) for i in queries])],
                             rtol=1e-6)
  np.testing.assert_allclose(stats['distance'], [np.mean([i / 2 for i in queries])], rtol=1e-6)
  np.testing.assert_allclose(stats['normalized_entropy'], [1.0], rtol=1e-6)


def test_previous_token_and_self_heads_are_one_hot_at_distance_one_and_zero():
  t = 7
  mask = _causal(t)
  previous = np.zeros((t, t))
  previous[0, 0] = 1
  previous[np.arange(1, t), np.arange(t - 1)] = 1
  weights = np.stack([previous, np.eye(t)])[None]   # [1, 2 heads, T, T]
  stats = attention.head_stats(weights, mask[None])
  np.testing.assert_allclose(stats['entropy'], [0, 0], atol=1e-12)
  np.testing.assert_allclose(stats['distance'], [1, 0], atol=1e-12)
  np.testing.assert_allclose(stats['max_weight'], [1, 1])


def test_packed_rows_and_padding():
  # one row: example of 4 tokens, example of 2, then 2 padding slots (bidirectional)
  seg = np.array([[1, 1, 1, 1, 2, 2, 0, 0]])
  pos = np.array([[0, 1, 2, 3, 0, 1, 0, 0]])
  mask = np.asarray(attention_mask(seg, seg, pos, pos, causal=False))[:, 0]
  weights = (mask / np.maximum(mask.sum(-1, keepdims=True), 1))[:, None]
  stats = attention.head_stats(weights, mask)
  # 4 queries with entropy ln 4, 2 with ln 2; padding queries have no keys and do not count
  np.testing.assert_allclose(stats['entropy'], [(4 * math.log(4) + 2 * math.log(2)) / 6],
                             rtol=1e-6)
  np.testing.assert_allclose(stats['distance'], [(4 * (15 / 12) + 2 * 0.5) / 6], rtol=1e-6)
  empty = attention.head_stats(weights, np.zeros_like(mask))
  assert np.isnan(empty['entropy']).all()


def test_cross_attention_distance_counts_positions_inside_each_packed_example():
  # targets: examples of 3 and 2 tokens; inputs: examples of 4 and 3 tokens
  q_seg, k_seg = np.array([[1, 1, 1, 2, 2]]), np.array([[1, 1, 1, 1, 2, 2, 2]])
  q_pos, k_pos = np.array([[0, 1, 2, 0, 1]]), np.array([[0, 1, 2, 3, 0, 1, 2]])
  mask = np.asarray(attention_mask(q_seg, k_seg, q_pos, k_pos, causal=False))[:, 0]
  diagonal = np.zeros((1, 1, 5, 7))
  diagonal[0, 0, [0, 1, 2, 3, 4], [0, 1, 2, 4, 5]] = 1   # target position p reads source p
  np.testing.assert_allclose(attention.head_stats(diagonal, mask)['distance'], [0.0])
  last = np.zeros((1, 1, 5, 7))
  last[0, 0, [0, 1, 2, 3, 4], [3, 3, 3, 6, 6]] = 1       # every query reads its source's end
  np.testing.assert_allclose(attention.head_stats(last, mask)['distance'],
                             [(3 + 2 + 1 + 2 + 1) / 5])


def test_diagnostic_scalars_tags_and_head_shares():
  t = 5
  mask = np.ones((t, t), bool)
  one_hot = np.tile(np.eye(t)[None], (1, 1, 1))
  uniform = _uniform(mask)[None]
  maps = [_map('layer0', np.concatenate([uniform, one_hot]), mask, kind='self'),
          _map('layer1', np.concatenate([uniform, uniform]), mask, kind='self')]
  scalars = attention.diagnostic_scalars(maps)
  np.testing.assert_allclose(scalars['attention/entropy/layer0'], math.log(t) / 2, rtol=1e-6)
  np.testing.assert_allclose(scalars['attention/entropy/layer1'], math.log(t), rtol=1e-6)
  np.testing.assert_allclose(scalars['attention_heads/entropy/layer0/head1'], 0, atol=1e-9)
  np.testing.assert_allclose(scalars['attention_heads/distance/layer0/head0'], 8 / 5, rtol=1e-6)
  assert scalars['attention/uniform_heads'] == 3 / 4
  assert scalars['attention/one_hot_heads'] == 1 / 4
  assert sorted(k for k in scalars if k.startswith('attention/distance')) == [
      'attention/distance/layer0', 'attention/distance/layer1']


def test_the_pictured_example_is_the_first_short_one_on_every_map():
  seg = np.array([[1] * 70 + [2] * 10, [1] * 5 + [2] * 75])
  pos = np.concatenate([np.r_[np.arange(70), np.arange(10)], np.r_[np.arange(5), np.arange(75)]])
  pos = pos.reshape(2, 80)
  mask = np.asarray(attention_mask(seg, seg, pos, pos, causal=True))[:, 0]
  m = attention.AttentionMap('layer0', 'causal', 'decoder', 'decoder',
                             np.zeros((2, 1, 80, 80), np.float32), mask)
  (row, q, k), = attention.example([m])
  assert row == 0 and list(q) == list(range(70, 80)) and list(k) == list(range(70, 80))
  (row, q, _), = attention.example([m], max_labelled=4)   # nothing that short: the first one
  assert row == 0 and len(q) == 70


def test_encoder_decoder_stack_tokens_shift_the_targets():
  batch = {'inputs': np.array([[5, 6, 7, 0]]), 'targets': np.array([[8, 9, 10, 11]]),
           'targets_segment_ids': np.array([[1, 1, 2, 2]])}
  tokens = attention.stack_tokens(batch, 'encoder_decoder', decoder_start_id=0)
  assert tokens['encoder'].tolist() == [[5, 6, 7, 0]]
  assert tokens['decoder'].tolist() == [[0, 8, 0, 10]]
  assert set(attention.stack_tokens(batch, 'decoder')) == {'decoder'}


def test_picture_of_one_head_is_readable():
  rng = np.random.default_rng(0)
  labels = [f'tok{i}' for i in range(20)]
  img = attention_plot.render(rng.dirichlet(np.ones(20), size=20), labels, labels,
                              title='layer0 head 0', subtitle='two\nlines')
  assert img.dtype == np.uint8 and img.shape[-1] == 3 and min(img.shape[:2]) >= 256
  long = attention_plot.render(rng.dirichlet(np.ones(128), size=128))
  assert min(long.shape[:2]) >= 256 + 52
  with pytest.raises(ValueError, match='one head'):
    attention_plot.render(np.ones((2, 3, 3)))
  assert attention_plot.token_label('a\nb') == 'a\\nb'
  assert len(attention_plot.token_label('x' * 40)) == attention_plot.LABEL_CHARS


TINY = {'model.num_layers': '2', 'model.d_model': '32', 'model.num_heads': '2', 'model.d_ff': '64',
        'data.seq_len': '32', 'data.vocab_size': '1024', 'train.batch_size': '4'}
FAMILIES = {
    'encoder': ('configs/bert.py:tiny', {}, ['layer0', 'layer1'], {'self'}),
    'decoder_scanned': ('configs/gpt2.py:tiny', {'model.scan_layers': 'true'},
                        ['layer0', 'layer1'], {'causal'}),
    'encoder_decoder': ('configs/t5.py:tiny', {'data.targets_len': '16'},
                        ['encoder/layer0', 'encoder/layer1', 'decoder/layer0', 'decoder/layer1',
                         'cross/layer0', 'cross/layer1'], {'self', 'causal', 'cross'}),
}


@pytest.mark.parametrize('family', list(FAMILIES))
def test_capture_sees_every_layer_of_every_family(family, tmp_path):
  spec, overrides, names, kinds = FAMILIES[family]
  run = setup.prepare(config_lib.load(spec, {**TINY, **overrides}), str(tmp_path))
  state = run.trainer.init_state()
  batch = next(run.pipeline('eval').iterator(0))
  maps = attention.capture(run.trainer.model(state['params']), run.trainer.objective, batch)
  assert [m.name for m in maps] == names and {m.kind for m in maps} == kinds
  for m in maps:
    b, heads, t, s = m.weights.shape
    assert (b, heads) == (4, 2) and m.mask.shape == (b, t, s)
    rows = m.mask.any(-1)
    np.testing.assert_allclose(m.weights.sum(-1).transpose(0, 2, 1)[rows], 1.0, rtol=1e-5)
    assert np.all(m.weights.transpose(0, 2, 3, 1)[rows[..., None] & ~m.mask] == 0)
    if m.kind == 'causal':
      assert not np.any(np.triu(m.mask, 1))
  scalars = attention.diagnostic_scalars(maps)
  assert all(np.isfinite(v) for v in scalars.values())
  assert {f'attention/entropy/{n}' for n in names} <= set(scalars)
  assert attention.example(maps) is not None
