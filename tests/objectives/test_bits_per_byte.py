"""Bits per byte (objectives/losses.py label_bytes, the tokenizers' byte_lengths): the summed
loss in bits over the UTF-8 bytes of the scored text, against a hand count; and the bytes
counted by the tables equal the bytes of the decoded text for SentencePiece (ours and T5's) and
byte-level BPE tokenizers of different vocabulary sizes, so on the same text they agree."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from tests.hf import builders
from tests.objectives.conftest import FakeTokenizer, TableModel, VOCAB
from transformer import objectives
from transformer.comparisons import results as comparison_results
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.hf_tokenizer import HFTokenizer
from transformer.objectives import losses
from transformer.sweeps import declarations, search
from transformer.sweeps import results as sweep_results
from transformer.training import scoring

HI, BANG = 40, 41          # '▁Hi' (3 bytes, its space dropped at a text's start) and '!'


class ByteTokenizer(FakeTokenizer):
  """The fake tokenizer with a byte table: 'tN' pieces of 2 bytes, plus '▁Hi' and '!'."""

  def byte_lengths(self):
    lengths, leading = np.full(VOCAB, 2, np.int32), np.zeros(VOCAB, np.int32)
    lengths[HI], leading[HI], lengths[BANG] = 3, 1, 1
    return lengths, leading


def test_causal_lm_bits_per_byte_equals_the_hand_count(make_config):
  """[bos] '▁Hi' '!' [eos] ('Hi!', 3 bytes): p('▁Hi' | bos) = 1/2, p('!' | '▁Hi') = 3/4,
  p(eos | '!') = 1/100: 1 + 0.415 + 6.644 bits over 3 bytes."""
  objective = objectives.get(make_config('causal_lm', 'decoder', seq_len=8), ByteTokenizer())
  logits = np.zeros((VOCAB, VOCAB), np.float32)
  logits[3, HI] = math.log(VOCAB - 1)             # e^x / (e^x + 99) = 1/2
  logits[HI, BANG] = math.log(3 * (VOCAB - 1))     # 3/4
  tokens = np.array([[3, HI, BANG, 1, 0, 0, 0, 0]], np.int32)
  batch = {'targets': tokens, 'targets_segment_ids': np.array([[1, 1, 1, 1, 0, 0, 0, 0]]),
           'targets_positions': np.arange(8, dtype=np.int32)[None]}
  _, metrics = objective.loss_and_metrics(TableModel(logits), batch)
  bits, scored_bytes = (float(v) for v in metrics['bits_per_byte'])
  want_bits = -math.log2(1 / 2) - math.log2(3 / 4) - math.log2(1 / VOCAB)
  assert scored_bytes == len('Hi!'.encode('utf-8')) == 3
  np.testing.assert_allclose(bits, want_bits, rtol=1e-5)
  np.testing.assert_allclose(bits, float(metrics['loss'][0]) / math.log(2), rtol=1e-6)


def test_a_space_inside_the_text_counts_and_mask_and_sentinels_do_not_start_a_text():
  """'▁Hi' after text or a sentinel keeps its space (4 bytes would be wrong: 3); after bos, sep
  or the decoder start (pad) it loses it; structure ids count nothing."""
  table = objectives.get(_config('causal_lm', 'decoder'), ByteTokenizer()).byte_table
  labels = jnp.array([HI, HI, HI, HI, HI, 1, 7])
  previous = jnp.array([50, 3, 5, 0, 7, HI, HI])     # text, bos, sep, pad, sentinel, ...
  np.testing.assert_array_equal(np.asarray(losses.label_bytes(table, labels, previous)),
                                [3, 2, 2, 2, 3, 0, 0])


def _config(objective, family, **data):
  c = common.base_config()
  c.objective, c.model.family, c.model.vocab_size = objective, family, VOCAB
  c.data.update(data)
  return c


TEXTS = ['Hello world', 'Café naïve résumé — déjà vu, Ärger über Öl.',
         '  lots   of\tspace\n\nand  new  lines  ', 'def f(x):\n    return {"a": x**2}  # ok',
         'emoji 🙂🎉 and 中文字符', ' leading space', 'x']


@pytest.fixture(scope='module')
def tokenizers(tmp_path_factory):
  """Ours (SentencePiece, byte fallback) at 600 and 1200 pieces, GPT-2's byte-level BPE at 300
  and 500, and T5's SentencePiece (which normalizes whitespace: its own decoded text), as
  spiece.model and as tokenizer.json (Metaspace: the table read from its decoder)."""
  root = tmp_path_factory.mktemp('tokenizers')
  out = {}
  for size in (600, 1200):
    path = root / f'sp{size}.model'
    path.write_bytes(tokenizer_lib._train_spm(builders.corpus(), size, 'unigram',   # pylint: disable=protected-access
                                              byte_fallback=True))
    out[f'sp{size}'] = tokenizer_lib.Tokenizer(str(path))
  for size in (300, 500):
    out[f'gpt2_{size}'] = HFTokenizer(builders.gpt2_tokenizer(str(root / f'gpt2_{size}'), size))
  out['t5'] = HFTokenizer(builders.t5_tokenizer(str(root / 't5')))
  out['t5_json'] = HFTokenizer(builders.t5_tokenizer(str(root / 't5_json'), tokenizer_json=True))
  return out


def _counted_bytes(tok, text):
  """The bytes an objective counts for `text` as one example, its scored tokens' label_bytes:
  causal LM ([bos] text [eos]), or for a tokenizer without bos (T5's) the encoder-decoder's
  targets (text [eos], the decoder starting from model.decoder_start_id)."""
  ids = tok.encode(text)
  if tok.bos_id is not None:
    obj = objectives.get(_config('causal_lm', 'decoder', seq_len=256), tok)
    previous, labels = [tok.bos_id, *ids], [*ids, tok.eos_id]
  else:
    obj = objectives.get(_config('seq2seq', 'encoder_decoder', seq_len=256), tok)
    previous, labels = [obj.decoder_start_id, *ids], [*ids, tok.eos_id]
  got = losses.label_bytes(obj.byte_table, jnp.asarray(labels), jnp.asarray(previous))
  return int(np.asarray(got).sum()), ids


@pytest.mark.parametrize('name', ['sp600', 'sp1200', 'gpt2_300', 'gpt2_500', 't5', 't5_json'])
def test_counted_bytes_are_the_bytes_of_the_decoded_text(tokenizers, name):
  """Every text without an unknown piece (T5's vocabulary lacks '—' and the emoji: an unknown
  piece counts no bytes, the text it stands for is lost) counts its decoded text's bytes."""
  tok = tokenizers[name]
  checked = 0
  for text in TEXTS:
    counted, ids = _counted_bytes(tok, text)
    if tok.unk_id in ids:
      continue
    assert counted == len(tok.decode(ids).encode('utf-8')), (name, text, tok.decode(ids))
    checked += 1
  assert checked >= 4, checked


def test_two_vocabularies_count_the_same_bytes_of_the_same_text(tokenizers):
  """Tokenizers that round-trip the text (ours at two sizes, byte-level BPE at two sizes) split
  it into different numbers of tokens and count the same bytes: the text's own."""
  for text in TEXTS:
    counts = {name: _counted_bytes(tokenizers[name], text) for name in
              ('sp600', 'sp1200', 'gpt2_300', 'gpt2_500')}
    assert {c for c, _ in counts.values()} == {len(text.encode('utf-8'))}, (text, counts)
  lengths = {name: len(_counted_bytes(tokenizers[name], TEXTS[1])[1]) for name in ('sp600',
                                                                                   'gpt2_300')}
  assert len(set(lengths.values())) == 2, lengths


def test_seq2seq_targets_count_the_target_text_on_either_family(tokenizers):
  """Encoder-decoder (the decoder starts from model.decoder_start_id) and decoder-only
  ([bos] source [sep] target [eos], the target scored) count the target's bytes."""
  tok = tokenizers['sp600']
  source, target = tok.encode('def f(x): return x'), tok.encode('Return x, unchanged.')
  want = len('Return x, unchanged.'.encode('utf-8'))
  enc_dec = objectives.get(_config('seq2seq', 'encoder_decoder', seq_len=64), tok)
  targets = [*target, tok.eos_id]
  got = losses.label_bytes(enc_dec.byte_table, jnp.asarray(targets),
                           jnp.asarray([enc_dec.decoder_start_id, *targets[:-1]]))
  assert int(np.asarray(got).sum()) == want
  stream = [tok.bos_id, *source, tok.sep_id, *target, tok.eos_id]
  scored = slice(len(source) + 1, None)   # labels from the one after sep's prediction on
  got = losses.label_bytes(enc_dec.byte_table, jnp.asarray(stream[1:]), jnp.asarray(stream[:-1]))
  assert int(np.asarray(got)[scored].sum()) == want


def test_the_score_file_sweep_search_and_comparison_tables_offer_bits_per_byte():
  """test/bits_per_byte from scored records (summed bits over summed bytes), a per-example
  comparison metric with the same mean, final/best (lowest) sweep columns, a search metric
  minimised by default."""
  records = [{'id': 'a', 'loss': 2 * math.log(2), 'tokens': 2, 'bytes': 4},
             {'id': 'b', 'loss': 6 * math.log(2), 'tokens': 3, 'bytes': 12}]
  assert scoring.summary(None, records)['test/bits_per_byte'] == pytest.approx(8 / 16)
  ids, values = comparison_results.example_scores(records, 'bits_per_byte')
  assert ids == ['a', 'b'] and values.mean() == pytest.approx(8 / 16)
  row = sweep_results._generation({'eval/bits_per_byte': [(100, 2.5), (200, 2.1), (300, 2.2)]})   # pylint: disable=protected-access
  assert row == {'final_eval_bits_per_byte': 2.2, 'best_eval_bits_per_byte': 2.1}
  assert 'eval/bits_per_byte' in search.REPORTABLE
  study = declarations.study({'opt.learning_rate': declarations.log_uniform(1e-4, 1e-2)},
                             metric='eval/bits_per_byte')
  assert study.direction == 'minimize'
