"""Packing: segment ids, positions, padding, no token lost or duplicated, order kept."""

import numpy as np
import pytest

from transformer.data import packing


def _examples(lengths, stream='targets', start=10):
  out, next_token = [], start
  for n in lengths:
    tokens = np.arange(next_token, next_token + n, dtype=np.int32)
    out.append({stream: tokens, f'{stream}_labels': tokens + 1000})
    next_token += n
  return out


def _unpack(batch, stream='targets'):
  """The examples of a packed batch, in row order, from segment ids."""
  found = []
  for r in range(batch[stream].shape[0]):
    segs = batch[f'{stream}_segment_ids'][r]
    for s in range(1, segs.max() + 1):
      keep = segs == s
      found.append((batch[stream][r][keep], batch[f'{stream}_positions'][r][keep],
                    batch[f'{stream}_labels'][r][keep]))
  return found


def test_packed_rows_layout():
  lengths = [3, 4, 2, 5, 1, 6, 2]
  examples = _examples(lengths)
  got = list(packing.batches(enumerate(examples), {'targets': 8}, 2, True, partial_last=True))
  # Rows: [3,4] [2,5,1] | [6,2] -- the example that does not fit starts the next row.
  (b0, next0), (b1, next1) = got
  assert next0 == 5 and next1 is None
  np.testing.assert_array_equal(b0['targets_segment_ids'],
                                [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 2, 2, 2, 2, 2, 3]])
  np.testing.assert_array_equal(b0['targets_positions'],
                                [[0, 1, 2, 0, 1, 2, 3, 0], [0, 1, 0, 1, 2, 3, 4, 0]])
  np.testing.assert_array_equal(b1['targets_segment_ids'][0], [1] * 6 + [2] * 2)
  np.testing.assert_array_equal(b1['targets_segment_ids'][1], [0] * 8)   # padding row
  assert b0['targets'].dtype == np.int32
  for b in (b0, b1):
    pad = b['targets_segment_ids'] == 0
    assert np.all(b['targets'][pad] == 0) and np.all(b['targets_labels'][pad] == 0)
  # Every token exactly once, in order, with positions restarting per example.
  found = _unpack(b0) + _unpack(b1)
  assert len(found) == len(examples)
  for ex, (tokens, positions, labels) in zip(examples, found):
    np.testing.assert_array_equal(tokens, ex['targets'])
    np.testing.assert_array_equal(labels, ex['targets_labels'])
    np.testing.assert_array_equal(positions, np.arange(len(tokens)))


def test_packing_random_streams_keeps_every_token():
  rng = np.random.default_rng(0)
  examples = _examples(rng.integers(1, 17, size=300))
  batches = list(packing.batches(enumerate(examples), {'targets': 16}, 4, True,
                                 partial_last=True))
  found = [f for b, _ in batches for f in _unpack(b)]
  all_tokens = np.concatenate([f[0] for f in found])
  np.testing.assert_array_equal(all_tokens, np.concatenate([e['targets'] for e in examples]))
  fill = np.mean([(b['targets_segment_ids'] > 0).mean() for b, _ in batches[:-1]])
  assert fill > 0.7     # greedy, one open row: ~76% for lengths uniform in 1..16


def test_two_streams_pack_together():
  examples = [{'inputs': np.full(n, 5, np.int32), 'targets': np.full(m, 7, np.int32)}
              for n, m in [(3, 2), (3, 5), (1, 1)]]
  (batch, nxt), = packing.batches(enumerate(examples), {'inputs': 6, 'targets': 6}, 2, True,
                                  partial_last=True)
  assert nxt is None
  # (3,2)+(3,5) would overflow targets: the second example starts row 2.
  np.testing.assert_array_equal(batch['inputs_segment_ids'], [[1, 1, 1, 0, 0, 0],
                                                              [1, 1, 1, 2, 0, 0]])
  np.testing.assert_array_equal(batch['targets_segment_ids'], [[1, 1, 0, 0, 0, 0],
                                                               [1, 1, 1, 1, 1, 2]])


def test_unpacked_rows_and_scalars():
  examples = [{'inputs': np.array([4, 5, 6], np.int32), 'label': np.int32(1)},
              {'inputs': np.array([7], np.int32), 'label': np.int32(0)},
              {'inputs': np.array([8, 9], np.int32), 'label': np.int32(1)}]
  got = list(packing.batches(enumerate(examples), {'inputs': 4}, 2, False, partial_last=False))
  assert len(got) == 1                      # the incomplete last batch is dropped in training
  batch, nxt = got[0]
  assert nxt == 2
  np.testing.assert_array_equal(batch['inputs'], [[4, 5, 6, 0], [7, 0, 0, 0]])
  np.testing.assert_array_equal(batch['inputs_segment_ids'], [[1, 1, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(batch['label'], [1, 0])
  assert batch['label'].shape == (2,)


def test_truncate_and_reject_scalars_when_packing():
  ex = packing.truncate({'targets': np.arange(10), 'targets_x': np.arange(10), 'label': 3},
                        {'targets': 4})
  assert len(ex['targets']) == 4 and len(ex['targets_x']) == 4 and ex['label'] == 3
  builder = packing.BatchBuilder({'targets': 4}, 2, pack=True)
  with pytest.raises(ValueError, match='packable'):
    builder.add(ex)
  with pytest.raises(ValueError, match='computed by the data pipeline'):
    packing.truncate({'targets': np.arange(3), 'targets_positions': np.arange(3)},
                     {'targets': 4})
