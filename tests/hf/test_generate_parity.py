"""Beam search against `transformers` `generate(num_beams=k)` on random HF GPT-2, T5 and BART
imported with transformer.hf.from_pretrained: the same n best sequences and scores.

EOS is a token the model emits often (the second commonest of a first search's later tokens:
random models like to repeat one token), so finished hypotheses, early stopping and the length
penalty all take part. Scores are HF's `sequences_scores` (log P over
new-tokens ** length_penalty): our length_norm='length'.
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from tests.e2e.test_hf_parity import bart, gpt2, t5  # noqa: E402  (model factories)
from transformer import hf  # noqa: E402
from transformer.models import decoding  # noqa: E402

K, RETURN, N = 4, 2, 8
EARLY = {'never': 'never', 'false': False, 'true': True}


def _hf_beams(model, ids, mask, *, eos, alpha, early_stopping, prompt_len, **kwargs):
  """HF's RETURN best continuations per input (up to and including EOS) and their scores."""
  with torch.no_grad():
    out = model.generate(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), num_beams=K,
        num_return_sequences=RETURN, max_new_tokens=N, length_penalty=alpha,
        early_stopping=EARLY[early_stopping], do_sample=False, eos_token_id=eos,
        no_repeat_ngram_size=0, min_length=0, forced_bos_token_id=None,
        forced_eos_token_id=None, output_scores=True, return_dict_in_generate=True, **kwargs)
  seqs = out.sequences.numpy()[:, prompt_len:]
  new = []
  for row in seqs:
    row = row.tolist()
    new.append(tuple(row[:row.index(eos) + 1] if eos in row else row))
  b = len(ids)
  return [new[i * RETURN:(i + 1) * RETURN] for i in range(b)], out.sequences_scores.numpy()


def _ours(model, ids, mask, *, eos, alpha, early_stopping):
  spec = decoding.Spec('beam', beam_size=K, alpha=alpha, length_norm='length',
                       early_stopping=early_stopping, num_return=RETURN)
  out = decoding.decode(model, ids, segment_ids=mask, max_new_tokens=N, eos_id=eos, spec=spec)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  seqs = [[tuple(tokens[b, r, :lengths[b, r]].tolist()) for r in range(RETURN)]
          for b in range(len(ids))]
  return seqs, np.asarray(out.scores).reshape(-1)


def _frequent_token(hf_model, ids, mask, prompt_len, **kwargs):
  """The second commonest token after the first in a search without EOS."""
  first, _ = _hf_beams(hf_model, ids, mask, alpha=1.0, early_stopping='false',
                       prompt_len=prompt_len, eos=hf_model.config.vocab_size, **kwargs)
  later = [t for rows in first for s in rows for t in s[1:]]
  return int(np.argsort(-np.bincount(later), kind='stable')[1])


def _compare(hf_model, tmp_path, ids, mask, *, alpha, early_stopping, prompt_len, **kwargs):
  hf_model.eval()
  hf_model.save_pretrained(tmp_path)
  _, model = hf.from_pretrained(tmp_path)
  eos = _frequent_token(hf_model, ids, mask, prompt_len, **kwargs)
  want, want_scores = _hf_beams(hf_model, ids, mask, eos=eos, alpha=alpha,
                                early_stopping=early_stopping, prompt_len=prompt_len, **kwargs)
  got, got_scores = _ours(model, ids, mask, eos=eos, alpha=alpha, early_stopping=early_stopping)
  print(f'\n[hf beams] HF {want}\n  ours {got}\n  scores HF {want_scores} ours {got_scores}')
  assert got == want
  np.testing.assert_allclose(got_scores, want_scores, atol=1e-4, rtol=1e-4)
  ended = [s for rows in got for s in rows if s[-1] == eos and len(s) < N]
  assert ended, 'no hypothesis ended at EOS: the comparison would not test finishing'


def _inputs(rng, vocab, batch, length, low):
  ids = rng.integers(low, vocab, (batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[1:, length - 2:] = 0   # the other rows right-padded
  return ids * mask, mask


def test_gpt2_beams_match_transformers(tmp_path):
  model = gpt2(vocab=24, initializer_range=0.15)
  ids = np.random.default_rng(0).integers(2, 24, (2, 5))   # equal lengths: HF pads on the left
  _compare(model, tmp_path, ids, np.ones_like(ids), alpha=1.0, early_stopping='false',
           prompt_len=5, pad_token_id=0)


def test_t5_beams_match_transformers(tmp_path):
  model = t5(vocab=24, d=32, heads=4, d_kv=8, ff=48)
  ids, mask = _inputs(np.random.default_rng(1), 24, 3, 7, low=2)
  _compare(model, tmp_path, ids, mask, alpha=0.6, early_stopping='true', prompt_len=1,
           pad_token_id=0, decoder_start_token_id=0)


@pytest.mark.slow
def test_bart_beams_match_transformers(tmp_path):
  model = bart(vocab=24, init_std=0.1)
  ids, mask = _inputs(np.random.default_rng(2), 24, 3, 7, low=3)
  _compare(model, tmp_path, ids, mask, alpha=0.8, early_stopping='never', prompt_len=1,
           pad_token_id=1, decoder_start_token_id=2)
