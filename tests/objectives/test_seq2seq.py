"""Seq2seq: encoder-decoder layout and loss, the decoder-only prefix-LM layout, truncation."""

import numpy as np

from transformer import objectives
from transformer.objectives import seq2seq


def test_encoder_decoder_layout(make_config, tokenizer):
  obj = objectives.get(make_config('seq2seq', 'encoder_decoder', seq_len=6, targets_len=4),
                       tokenizer)
  assert obj.example_fields == ('inputs', 'targets')
  assert obj.stream_lengths == {'inputs': 6, 'targets': 4} and obj.text_chunk_len is None
  f = obj.features({'inputs': np.array([40, 41]), 'targets': np.array([50])})
  np.testing.assert_array_equal(f['inputs'], [40, 41, 1])
  np.testing.assert_array_equal(f['targets'], [50, 1])
  f = obj.features({'inputs': np.arange(40, 50), 'targets': np.arange(50, 60)})
  np.testing.assert_array_equal(f['inputs'], [40, 41, 42, 43, 44, 1])
  np.testing.assert_array_equal(f['targets'], [50, 51, 52, 1])


def test_decoder_only_layout_is_prefix_lm(make_config, tokenizer):
  obj = objectives.get(make_config('seq2seq', 'decoder', seq_len=32), tokenizer)
  assert obj.stream_lengths == {'targets': 32}
  f = obj.features({'inputs': np.array([40, 41, 42]), 'targets': np.array([50, 51])})
  #                                 bos src.......  sep tgt.... eos
  np.testing.assert_array_equal(f['targets'], [3, 40, 41, 42, 5, 50, 51, 1])
  np.testing.assert_array_equal(f['targets_prefix'], [1, 1, 1, 1, 1, 0, 0, 0])


def test_decoder_only_loss_scores_the_target_and_eos_only(make_config, tokenizer, table,
                                                          table_model, packer):
  obj = objectives.get(make_config('seq2seq', 'decoder', seq_len=32), tokenizer)
  feats = [obj.features({'inputs': np.array([40, 41, 42]), 'targets': np.array([50, 51])}),
           obj.features({'inputs': np.array([60]), 'targets': np.array([70, 71, 72])})]
  batch = packer(feats, 32, 'targets')
  loss, metrics = obj.loss_and_metrics(table_model, batch, deterministic=True)
  assert float(metrics['loss'][1]) == 3 + 4  # (50, 51, eos) and (70, 71, 72, eos)
  tokens = batch['targets'][0]
  pairs = [(4, 50), (5, 51), (6, 1), (10, 70), (11, 71), (12, 72), (13, 1)]  # (position, label)
  assert all(tokens[i + 1] == y for i, y in pairs)
  xent = [np.log(np.exp(table[tokens[i]].astype(np.float64)).sum()) - table[tokens[i], y]
          for i, y in pairs]
  np.testing.assert_allclose(loss, np.mean(xent), rtol=1e-5)
  np.testing.assert_array_equal(table_model.calls[-1][1]['prefix'], batch['targets_prefix'])


def test_long_pairs_keep_half_the_budget_for_the_target(make_config, tokenizer):
  assert seq2seq.split_budget(3, 4, 10) == (3, 4)
  assert seq2seq.split_budget(20, 3, 10) == (7, 3)
  assert seq2seq.split_budget(20, 20, 10) == (5, 5)
  assert seq2seq.split_budget(2, 20, 10) == (2, 8)
  obj = objectives.get(make_config('seq2seq', 'decoder', seq_len=16), tokenizer)
  f = obj.features({'inputs': np.arange(40, 70), 'targets': np.arange(70, 99)})
  assert len(f['targets']) == 16 and f['targets'][-1] == 1
  assert f['targets_prefix'].sum() == 1 + 7 + 1  # bos, 7 source tokens, sep


def test_encoder_decoder_loss_matches_hand_computation(make_config, tokenizer, table,
                                                       table_model):
  obj = objectives.get(make_config('seq2seq', 'encoder_decoder', seq_len=8, targets_len=6),
                       tokenizer)
  f = obj.features({'inputs': np.array([40, 41]), 'targets': np.array([50, 51, 52])})
  batch = {'inputs': np.pad(f['inputs'], (0, 5))[None],
           'inputs_segment_ids': np.array([[1, 1, 1, 0, 0, 0, 0, 0]]),
           'inputs_positions': np.array([[0, 1, 2, 0, 0, 0, 0, 0]]),
           'targets': np.pad(f['targets'], (0, 2))[None],
           'targets_segment_ids': np.array([[1, 1, 1, 1, 0, 0]]),
           'targets_positions': np.array([[0, 1, 2, 3, 0, 0]])}
  loss, _ = obj.loss_and_metrics(table_model, batch, deterministic=True)
  pairs = [(0, 50), (50, 51), (51, 52), (52, 1)]  # (decoder input, label)
  xent = [np.log(np.exp(table[x].astype(np.float64)).sum()) - table[x, y] for x, y in pairs]
  np.testing.assert_allclose(loss, np.mean(xent), rtol=1e-5)


def test_decoder_only_predict(make_config, tokenizer, fake_decoding):
  obj = objectives.get(make_config('seq2seq', 'decoder', seq_len=32), tokenizer)
  f = obj.features({'inputs': np.array([40, 41, 42]), 'targets': np.array([50, 51])})
  batch = {'targets': f['targets'][None], 'targets_prefix': f['targets_prefix'][None],
           'targets_segment_ids': np.ones((1, 8), np.int32),
           'targets_positions': np.arange(8)[None]}
  [s] = obj.predict(None, batch, tokenizer, max_new_tokens=2)
  assert s == dict(input='t40 t41 t42', prediction='t50 t51', reference='t50 t51')
  np.testing.assert_array_equal(fake_decoding[0]['prompt'], [[3, 40, 41, 42, 5]])


def test_score_is_corpus_bleu(make_config, tokenizer):
  obj = objectives.get(make_config('seq2seq', 'encoder_decoder'), tokenizer)
  same = [dict(input='x', prediction='a b c d e', reference='a b c d e')] * 2
  assert obj.score(same)['bleu'] > 99
  wrong = [dict(input='x', prediction='f g h i j', reference='a b c d e')] * 2
  assert obj.score(wrong)['bleu'] < 1
  assert obj.score([]) == {}
  assert objectives.get(make_config('causal_lm', 'decoder'), tokenizer).score(same) == {}
