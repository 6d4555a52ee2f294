"""The piece API of the pretraining objectives (full packing cuts documents into pieces)."""

import numpy as np
import pytest

from transformer import objectives

from tests.objectives.test_span_corruption import _reconstruct

PRETRAINING = [('causal_lm', 'decoder'), ('prefix_lm', 'decoder'), ('mlm', 'encoder'),
               ('span_corruption', 'encoder_decoder'), ('span_corruption', 'decoder')]


@pytest.mark.parametrize('name, family', PRETRAINING)
def test_piece_lengths_are_what_piece_gives_and_non_decreasing(make_config, tokenizer, name,
                                                               family):
  obj = objectives.get(make_config(name, family, seq_len=64, targets_len=16), tokenizer)
  assert obj.min_piece > 0
  rng = np.random.default_rng(0)
  for first in (False, True):
    for last in (False, True):
      previous = None
      for n in range(1, 60):
        lengths = obj.piece_lengths(n, first=first, last=last)
        tokens = rng.integers(39, 100, size=n).astype(np.int32)
        piece = obj.piece(tokens, rng, first=first, last=last)
        assert {s: len(piece[s]) for s in lengths} == lengths
        if previous:
          assert all(lengths[s] >= previous[s] for s in lengths)
        previous = lengths


def test_causal_lm_pieces_carry_bos_and_eos_only_at_document_edges(make_config, tokenizer):
  obj = objectives.get(make_config('causal_lm', 'decoder'), tokenizer)
  text = np.arange(40, 50, dtype=np.int32)
  bos, eos = tokenizer.bos_id, tokenizer.eos_id
  assert obj.piece(text, first=True, last=True)['targets'].tolist() == [bos, *text, eos]
  assert obj.piece(text, first=True, last=False)['targets'].tolist() == [bos, *text]
  assert obj.piece(text, first=False, last=False)['targets'].tolist() == text.tolist()
  assert obj.piece(text, first=False, last=True)['targets'].tolist() == [*text, eos]


def test_prefix_lm_piece_prefix_is_a_fraction_of_the_piece(make_config, tokenizer):
  obj = objectives.get(make_config('prefix_lm', 'decoder', prefix_fraction=0.25), tokenizer)
  text = np.arange(40, 60, dtype=np.int32)                       # 20 tokens -> 5 in the prefix
  whole = obj.piece(text, first=True, last=True)
  assert whole['targets_prefix'].tolist() == [1] * 6 + [0] * 16   # [bos] + 5 | 15 + [eos]
  middle = obj.piece(text, first=False, last=False)
  assert middle['targets_prefix'].tolist() == [1] * 5 + [0] * 15
  assert obj.features({'text': text})['targets_prefix'].tolist() == whole['targets_prefix'].tolist()


def test_mlm_masks_a_packed_row_with_one_budget(make_config, tokenizer):
  mlm = objectives.get(make_config('mlm', 'encoder', seq_len=64), tokenizer)
  rng = np.random.default_rng(0)
  texts = [rng.integers(39, 100, size=n).astype(np.int32) for n in (30, 4, 24)]   # 58 + 6 = 64
  pieces = [mlm.piece(t, first=False, last=False) for t in texts]
  assert all(p['inputs'][0] == tokenizer.cls_id and p['inputs'][-1] == tokenizer.sep_id and
             not p['inputs_labels'].any() for p in pieces)
  row = mlm.finish_row(pieces, np.random.default_rng(1))
  assert [len(p['inputs']) for p in row] == [len(p['inputs']) for p in pieces]
  labels = np.concatenate([p['inputs_labels'] for p in row])
  original = np.concatenate([p['inputs'] for p in pieces])
  assert (labels > 0).sum() == round(0.15 * 58) <= mlm.max_predictions   # one budget, 58 tokens
  np.testing.assert_array_equal(labels[labels > 0], original[labels > 0])
  assert all(p['inputs'][0] == tokenizer.cls_id and p['inputs'][-1] == tokenizer.sep_id
             for p in row)


def test_mlm_loss_gathered_at_chosen_positions_equals_the_full_logits_loss(make_config,
                                                                          tokenizer, packer):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from transformer import models  # pylint: disable=import-outside-toplevel
  from transformer.objectives import losses  # pylint: disable=import-outside-toplevel
  cfg = make_config('mlm', 'encoder', seq_len=48)
  cfg.model.update(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_len=64)
  obj = objectives.get(cfg, tokenizer)
  model = models.build(cfg.model, head='lm', rngs=nnx.Rngs(params=0, dropout=1))
  rng = np.random.default_rng(2)
  feats = [obj.features({'text': rng.integers(39, 100, size=n)}, rng) for n in (20, 18)]
  batch = packer(feats, 48, 'inputs')
  loss, metrics = obj.loss_and_metrics(model, batch)
  full = model(batch['inputs'], batch['inputs_segment_ids'], batch['inputs_positions'])
  labels = batch['inputs_labels']
  ref_loss, ref_metrics = losses.cross_entropy(full, labels, (labels > 0).astype(np.float32))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=1e-6)


def test_span_corruption_pieces_are_whole_examples(make_config, tokenizer):
  text = np.arange(40, 80, dtype=np.int32)
  sc = objectives.get(make_config('span_corruption', 'encoder_decoder'), tokenizer)
  p = sc.piece(text, np.random.default_rng(0), first=False, last=True)
  assert _reconstruct(p['inputs'].tolist(), p['targets'].tolist()) == text.tolist()
