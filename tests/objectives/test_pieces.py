"""The piece API of the pretraining objectives (full packing cuts documents into pieces)."""

import numpy as np
import pytest

from transformer import objectives

from tests.objectives.test_span_corruption import _reconstruct

PRETRAINING = [('causal_lm', 'decoder'), ('prefix_lm', 'decoder'), ('mlm', 'encoder'),
               ('span_corruption', 'encoder_decoder')]


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


def test_mlm_and_span_corruption_pieces_are_whole_examples(make_config, tokenizer):
  mlm = objectives.get(make_config('mlm', 'encoder'), tokenizer)
  text = np.arange(40, 80, dtype=np.int32)
  p = mlm.piece(text, np.random.default_rng(0), first=False, last=False)
  assert p['inputs'][0] == tokenizer.cls_id and p['inputs'][-1] == tokenizer.sep_id
  assert 0 < (p['inputs_labels'] > 0).sum() <= 8
  sc = objectives.get(make_config('span_corruption', 'encoder_decoder'), tokenizer)
  p = sc.piece(text, np.random.default_rng(0), first=False, last=True)
  assert _reconstruct(p['inputs'].tolist(), p['targets'].tolist()) == text.tolist()
