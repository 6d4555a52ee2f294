"""UL2 through the real pipeline: stream packing with one denoiser per piece fills its rows, the
mode token that leads each example is the trained tokenizer's registry id, and a saved position
resumes exactly under another batch size."""

import numpy as np
import pytest

import transformer.data as data_lib
from transformer import objectives
from transformer.data import packing, special_tokens

from tests.data.conftest import make_config
from tests.data.test_pipeline import corpus  # pylint: disable=unused-import  (a fixture)

FAMILIES = {'decoder': 'targets', 'encoder_decoder': 'inputs'}   # the stream the mode leads


def _config(data_dir, family, batch_size=4, **data):
  c = make_config(data_dir, **data)
  c.objective, c.model.family, c.train.batch_size = 'ul2', family, batch_size
  return c


def _rows_fill(batches, streams):
  """Per row, the fill of its fullest stream (a row closes when one stream is full)."""
  return np.concatenate([np.stack([(b[f'{s}_segment_ids'] > 0).mean(1) for s in streams]).max(0)
                         for b in batches])


class RandomTail:
  """A stand-in whose piece ends in 0..3 extra tokens drawn from its rng: its lengths are known
  only from the piece's key."""
  min_piece = 2
  stream_lengths = {'targets': 20}

  def piece_lengths(self, n, *, first, last, key=None):
    del first, last
    return {'targets': n + int(np.random.default_rng(key).integers(0, 4))}

  def piece(self, tokens, rng, *, first, last):
    del first, last
    return {'targets': np.concatenate([tokens, np.ones(rng.integers(0, 4), np.int32)])}


def test_the_packer_gives_piece_lengths_the_key_of_the_piece():
  obj, rng = RandomTail(), np.random.default_rng(0)
  docs = [(i, 0, rng.integers(5, 50, size=n).astype(np.int32))
          for i, n in enumerate(rng.integers(1, 30, size=60))]
  key = lambda index, offset: (9, index, offset)

  def make_piece(tokens, piece_key, *, first, last):
    return obj.piece(tokens, np.random.default_rng(piece_key), first=first, last=last)
  rows = [r for r, _ in packing.stream_rows(docs, obj, obj.stream_lengths, make_piece, key)]
  batch = packing.build(rows, obj.stream_lengths, len(rows))
  assert (batch['targets_segment_ids'][:-1] > 0).mean() > 0.97
  tails = batch['targets'] == 1
  assert 0 < tails.sum() and np.concatenate([p['targets'] for r in rows for p in r]).size == (
      batch['targets_segment_ids'] > 0).sum()


@pytest.mark.parametrize('family', FAMILIES)
def test_ul2_stream_packs_the_embedded_corpus(stdlib_dir, small_tokenizer, family):
  c = _config(stdlib_dir, family, source='python_stdlib/text', seq_len=128, targets_len=64)
  obj = objectives.get(c, small_tokenizer)
  pipe = data_lib.Pipeline(c, obj, small_tokenizer)
  assert pipe.mode == 'stream'
  it = pipe.iterator()
  batches = [next(it) for _ in range(10)]
  assert _rows_fill(batches, obj.stream_lengths).mean() >= 0.98
  # every slot, both streams of an encoder-decoder too (greedy cuts filled 0.78 of them here)
  assert packing.fill(*batches) >= 0.98
  # each packed example starts with the mode token of its denoiser, the registry's id
  modes = {small_tokenizer.mode_r_id, small_tokenizer.mode_x_id, small_tokenizer.mode_s_id}
  assert modes == {i for name in ('mode_r', 'mode_x', 'mode_s')
                   for i in special_tokens.ids_of(small_tokenizer, name)}
  stream = FAMILIES[family]
  firsts = []
  for b in batches:
    tokens, segs = b[stream], b[f'{stream}_segment_ids']
    firsts += [tokens[r][segs[r] == s][0] for r in range(len(tokens))
               for s in range(1, segs[r].max() + 1)]
    assert np.isin(tokens, list(modes)).sum() == sum(segs[r].max() for r in range(len(tokens)))
  assert set(firsts) == modes
  assert small_tokenizer.decode([small_tokenizer.mode_x_id]).strip() == '[X]'


@pytest.mark.parametrize('family', FAMILIES)
def test_ul2_resumes_exactly_with_another_batch_size(tmp_path, corpus, small_tokenizer, family):
  def config(batch_size):
    return _config(tmp_path, family, batch_size, source=f'text:{corpus}/*.txt',
                   shuffle_buffer=50, seq_len=48, targets_len=24)
  obj = objectives.get(config(4), small_tokenizer)
  it = data_lib.Pipeline(config(4), obj, small_tokenizer).iterator()
  first = [next(it) for _ in range(3)]
  state = it.state
  rest = [next(it) for _ in range(8)]
  assert _rows_fill(first + rest, obj.stream_lengths).mean() > 0.95
  bigger = data_lib.Pipeline(config(8), obj, small_tokenizer).iterator(state)
  for b in (next(bigger) for _ in range(4)):
    for k in b:
      np.testing.assert_array_equal(b[k], np.concatenate([r[k] for r in rest[:2]]), err_msg=k)
    rest = rest[2:]
