"""Full packing: a token stream cut into full rows, every token once, exact resume; window
packing of pair data; old checkpoint positions."""

import numpy as np
import pytest

import transformer.data as data_lib
from transformer import objectives
from transformer.data import packing, pipeline as pipeline_lib
from transformer.errors import ConfigError

from tests.data.conftest import Seq2SeqObjective, make_config
from tests.data.test_pipeline import corpus  # pylint: disable=unused-import  (a fixture)

BOS, EOS = 2, 1


class PieceLM:
  """Stand-in causal LM with the piece API: [bos] at a document's start, [eos] at its end."""
  min_piece = 2

  def __init__(self, length):
    self.stream_lengths = {'targets': length}

  def piece_lengths(self, n, *, first, last):
    return {'targets': n + int(first) + int(last)}

  def piece(self, tokens, rng=None, *, first, last):
    del rng
    return {'targets': np.asarray([BOS] * first + list(tokens) + [EOS] * last, np.int32)}


def _documents(lengths, start=10):
  docs, nxt = [], start
  for n in lengths:
    docs.append(np.arange(nxt, nxt + n, dtype=np.int32))
    nxt += n
  return docs


def _rows(docs, obj, position=(0, 0)):
  def make(tokens, key, *, first, last):
    del key
    return obj.piece(tokens, first=first, last=last)
  raw, offset = position
  stream = ((i, offset if i == raw else 0, d) for i, d in enumerate(docs) if i >= raw)
  return list(packing.stream_rows(stream, obj, obj.stream_lengths, make))


def test_stream_rows_are_full_and_keep_every_token_in_order():
  rng = np.random.default_rng(0)
  docs = _documents(rng.integers(1, 70, size=200))
  obj = PieceLM(32)
  rows = _rows(docs, obj)
  batch = packing.build([r for r, _ in rows], obj.stream_lengths, len(rows))
  segs, tokens, pos = batch['targets_segment_ids'], batch['targets'], batch['targets_positions']
  # Rows end at most 2 slots short (a new document's piece needs [bos] + 2 tokens).
  assert (segs[:-1] > 0).sum(axis=1).min() >= 30
  assert (segs[:-1] > 0).mean() > 0.99
  # Pieces are segments with positions from 0; reading them in order gives the stream back.
  text = []
  for r in range(len(rows)):
    for s in range(1, segs[r].max() + 1):
      piece = tokens[r][segs[r] == s]
      np.testing.assert_array_equal(pos[r][segs[r] == s], np.arange(len(piece)))
      text += [t for t in piece.tolist() if t not in (BOS, EOS)]
  np.testing.assert_array_equal(text, np.concatenate(docs))
  # BOS once per document (at its start), EOS once (at its end), wherever rows cut them.
  assert (tokens == BOS).sum() == (tokens == EOS).sum() == len(docs)
  starts = [tokens[r][segs[r] == s][0] for r in range(len(rows)) for s in range(1, segs[r].max() + 1)]
  assert sum(t == BOS for t in starts) == len(docs)
  assert len(starts) > len(docs)           # some documents were split across rows


def test_stream_resume_from_any_row_gives_the_same_rows():
  rng = np.random.default_rng(1)
  docs = _documents(rng.integers(1, 90, size=80))
  obj = PieceLM(24)
  rows = _rows(docs, obj)
  for k in (1, 5, 17, len(rows) - 2):
    after = rows[k - 1][1]
    again = _rows(docs, obj, after)
    assert len(again) == len(rows) - k
    for (a, _), (b, _) in zip(again, rows[k:]):
      assert len(a) == len(b)
      for x, y in zip(a, b):
        np.testing.assert_array_equal(x['targets'], y['targets'])
  assert any(after[1] > 0 for _, after in rows[:-1])   # rows start inside documents


def test_fit_takes_the_longest_piece_and_respects_min_piece():
  obj = PieceLM(10)
  assert packing.fit(obj.piece_lengths, 20, {'targets': 10}, first=True, min_piece=2) == 9
  assert packing.fit(obj.piece_lengths, 8, {'targets': 10}, first=True, min_piece=2) == 8
  assert packing.fit(obj.piece_lengths, 20, {'targets': 2}, first=True, min_piece=2) == 0
  assert packing.fit(obj.piece_lengths, 20, {'targets': 2}, first=False, min_piece=2) == 2
  assert packing.fit(obj.piece_lengths, 1, {'targets': 2}, first=False, min_piece=2) == 1


def _pair_examples(n, seed=0):
  rng = np.random.default_rng(seed)
  return [((i, 0), {'inputs': np.full(a, i, np.int32), 'targets': np.full(b, i, np.int32)})
          for i, (a, b) in enumerate(rng.integers(1, 14, size=(n, 2)))]


def test_window_packing_fills_better_keeps_every_example_and_resumes():
  examples, lengths = _pair_examples(400), {'inputs': 16, 'targets': 16}
  greedy = [b for b, _ in packing.batches(examples, lengths, 4, True, partial_last=True)]
  window = list(packing.batches(examples, lengths, 4, True, partial_last=True, window=8))

  def fill(batches):
    used, slots = map(sum, zip(*(packing.efficiency(b) for b in batches[:-1])))
    return used / slots
  assert fill([b for b, _ in window]) > fill(greedy) + 0.05
  seen = sorted(int(v) for b, _ in window for row, seg in zip(b['inputs'], b['inputs_segment_ids'])
                for s in range(1, seg.max() + 1) for v in row[seg == s][:1])
  assert seen == list(range(400))
  # A position inside a block: pack that block again, skip its emitted rows.
  rows = list(packing.window_rows(examples, lengths, 8))
  for k in (3, 10, 11, 30):
    (start, _), skip = rows[k - 1][1]
    again = list(packing.window_rows(examples[start:], lengths, 8, skip=skip))
    assert [[e['inputs'][0] for e in r] for r, _ in again[:5]] == [
        [e['inputs'][0] for e in r] for r, _ in rows[k:k + 5]]
  assert any(skip > 0 for (_, skip) in (after for _, after in rows[:-1]))


@pytest.mark.parametrize('objective, family', [('causal_lm', 'decoder'), ('prefix_lm', 'decoder'),
                                               ('mlm', 'encoder'),
                                               ('span_corruption', 'encoder_decoder')])
def test_real_objectives_stream_pack_and_resume_with_another_batch_size(
    tmp_path, corpus, small_tokenizer, objective, family):
  def config(batch_size):
    c = make_config(tmp_path, source=f'text:{corpus}/*.txt', shuffle_buffer=50, seq_len=48,
                    targets_len=12)
    c.objective, c.model.family, c.train.batch_size = objective, family, batch_size
    return c
  obj = objectives.get(config(4), small_tokenizer)
  pipe = data_lib.Pipeline(config(4), obj, small_tokenizer)
  assert pipe.mode == 'stream'
  it = pipe.iterator()
  first = [next(it) for _ in range(5)]
  state = it.state
  rest = [next(it) for _ in range(8)]
  used, slots = map(sum, zip(*(packing.efficiency(b) for b in first + rest)))
  assert used / slots > (0.93 if objective == 'span_corruption' else 0.98)
  bigger = data_lib.Pipeline(config(8), obj, small_tokenizer).iterator(state)
  for b in (next(bigger) for _ in range(4)):
    for k in b:
      np.testing.assert_array_equal(b[k], np.concatenate([r[k] for r in rest[:2]]), err_msg=k)
    rest = rest[2:]


def test_stream_packing_fills_the_embedded_corpus(stdlib_dir, small_tokenizer):
  c = make_config(stdlib_dir, source='python_stdlib/text', seq_len=128)
  obj = objectives.get(c, small_tokenizer)
  it = data_lib.Pipeline(c, obj, small_tokenizer).iterator()
  used, slots = map(sum, zip(*(packing.efficiency(next(it)) for _ in range(10))))
  assert used / slots >= 0.98


def test_old_chunk_positions_are_upgraded_and_unknown_formats_refused(tmp_path, corpus,
                                                                       small_tokenizer):
  c = make_config(tmp_path, source=f'text:{corpus}/*.txt', seq_len=8)
  obj = objectives.get(c, small_tokenizer)          # causal LM: chunks of 6 text tokens
  assert pipeline_lib.upgrade_position((7, 3), 1, obj) == (7, 18)
  assert pipeline_lib.upgrade_position((7, 18), 2, obj) == (7, 18)
  assert pipeline_lib.upgrade_position([7, 0], 1, Seq2SeqObjective()) == (7, 0)
  with pytest.raises(ConfigError, match='format 3') as e:
    pipeline_lib.upgrade_position((7, 3), 3, obj)
  assert '\n' not in str(e.value)
  # The upgraded position starts at the token where old chunk 3 started.
  pipe = data_lib.Pipeline(c, obj, small_tokenizer)
  raw = next(i for i, (_, doc) in enumerate(zip(range(99), pipe.raw_examples()))
             if len(small_tokenizer.encode(doc[1]['text'])) > 20)
  index, offset, tokens = next(pipe.documents(pipeline_lib.upgrade_position((raw, 3), 1, obj)))
  assert (index, offset) == (raw, 18)
  row, _ = next(pipe.rows((index, offset)))
  np.testing.assert_array_equal(row[0]['targets'][:2], tokens[18:20])


def test_pair_data_uses_window_packing(tmp_path, small_tokenizer):
  path = tmp_path / 'pairs.jsonl'
  rng = np.random.default_rng(0)
  import json  # pylint: disable=import-outside-toplevel
  path.write_text('\n'.join(json.dumps({'en': ' '.join(['hello'] * int(a)),
                                        'de': ' '.join(['hallo'] * int(b))})
                            for a, b in rng.integers(1, 12, size=(300, 2))) + '\n')
  c = make_config(tmp_path, source=f'jsonl:{path}', inputs_key='en', targets_key='de')
  pipe = data_lib.Pipeline(c, Seq2SeqObjective(), small_tokenizer)
  assert pipe.mode == 'window'
  it = pipe.iterator()
  batches = [next(it) for _ in range(6)]
  states = []
  for _ in range(6):
    batches.append(next(it))
    states.append(it.state)
  assert any(offset > 0 for _, offset in states)     # some batches end inside a block
  for i, state in enumerate(states[:-1]):
    resumed = pipe.iterator(state)
    for k, v in next(resumed).items():
      np.testing.assert_array_equal(v, batches[7 + i][k], err_msg=k)
