"""Pipeline: deterministic order, exact resume (also with another batch size), eval, shards."""

import numpy as np
import pytest

import transformer.data as data_lib

from tests.data.conftest import LMObjective, make_config


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A text: corpus whose lines have distinct lengths, some longer than one chunk."""
  folder = tmp_path_factory.mktemp('corpus')
  rng = np.random.default_rng(0)
  words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'theta', 'kappa']
  lines = [f'line {i} ' + ' '.join(rng.choice(words, size=rng.integers(2, 40)))
           for i in range(220)]
  (folder / 'a.txt').write_text('\n'.join(lines[:120]) + '\n')
  (folder / 'b.txt').write_text('\n'.join(lines[120:]) + '\n\n')
  return folder


def _config(tmp_path, corpus, batch_size=4, **data):
  c = make_config(tmp_path, source=f'text:{corpus}/*.txt', shuffle_buffer=50, **data)
  c.train.batch_size = batch_size
  c.train.seed = 3
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _rows(batches):
  return [tuple(row) for b in batches for row in b['targets']]


def _equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize('pack', [True, False])
def test_resume_gives_the_same_batches(tmp_path, corpus, small_tokenizer, pack):
  c = _config(tmp_path, corpus, pack=pack)
  obj = LMObjective(16, random_extra=True)      # chunks straddle batches; features use the rng
  pipeline = data_lib.Pipeline(c, obj, small_tokenizer)
  it = pipeline.iterator()
  first = _take(it, 7)
  state = it.state
  rest = _take(it, 30)                          # runs past the end of the first epoch
  assert pipeline.epoch_length < 220
  resumed = data_lib.Pipeline(c, obj, small_tokenizer).iterator(state)
  _equal(_take(resumed, 30), rest)
  assert resumed.state == it.state
  # Iteration is deterministic: a fresh pipeline repeats the first batches exactly.
  _equal(_take(data_lib.Pipeline(c, obj, small_tokenizer).iterator(), 7), first)
  # Chunked examples may end a batch mid-text: the state then names the chunk.
  states = []
  it2 = data_lib.Pipeline(c, obj, small_tokenizer).iterator()
  for _ in range(20):
    next(it2)
    states.append(it2.state)
  assert any(chunk > 0 for _, chunk in states)
  assert all(b >= a for a, b in zip(states, states[1:]))


def test_resume_with_another_batch_size(tmp_path, corpus, small_tokenizer):
  obj = LMObjective(16)
  run = data_lib.Pipeline(_config(tmp_path, corpus, 4), obj, small_tokenizer).iterator()
  _take(run, 5)
  state = run.state
  continued = _rows(_take(run, 8))
  bigger = data_lib.Pipeline(_config(tmp_path, corpus, 8), obj, small_tokenizer)
  assert _rows(_take(bigger.iterator(state), 4)) == continued


def test_epochs_reshuffle_and_cover_everything(tmp_path, corpus, small_tokenizer):
  c = _config(tmp_path, corpus)
  pipeline = data_lib.Pipeline(c, LMObjective(200), small_tokenizer)   # one chunk per line
  n = pipeline.epoch_length
  raw = pipeline.raw_examples()
  epoch0 = [next(raw)[1]['text'] for _ in range(n)]
  epoch1 = [next(raw)[1]['text'] for _ in range(n)]
  assert sorted(epoch0) == sorted(epoch1) == sorted(r['text'] for r in
                                                     pipeline.source.records['train'])
  assert epoch0 != epoch1
  assert epoch0 != [r['text'] for r in pipeline.source.records['train']]    # shuffled
  other_seed = _config(tmp_path, corpus)
  other_seed.train.seed = 4
  raw4 = data_lib.Pipeline(other_seed, LMObjective(200), small_tokenizer).raw_examples()
  assert [next(raw4)[1]['text'] for _ in range(n)] != epoch0


def test_eval_is_ordered_finite_and_padded(tmp_path, corpus, small_tokenizer):
  c = _config(tmp_path, corpus, pack=False)
  pipeline = data_lib.Pipeline(c, LMObjective(200), small_tokenizer, split='eval')
  batches = list(pipeline.iterator())
  again = list(pipeline.iterator())
  _equal(batches, again)
  texts = [small_tokenizer.decode(row) for b in batches for row, seg in
           zip(b['targets'], b['targets_segment_ids']) if seg[0]]
  assert texts == [r['text'] for r in pipeline.source.records['validation']]
  n = pipeline.epoch_length
  assert len(batches) == -(-n // 4)
  if n % 4:
    assert (batches[-1]['targets_segment_ids'][n % 4:] == 0).all()


def test_processes_read_disjoint_shards(tmp_path, corpus, small_tokenizer):
  c = _config(tmp_path, corpus, batch_size=4)
  shards = [data_lib.Pipeline(c, LMObjective(200), small_tokenizer, process_index=i,
                              process_count=2) for i in range(2)]
  assert all(p.batch_size == 2 for p in shards)
  texts = [{raw['text'] for _, (_, raw) in zip(range(p.epoch_length), p.raw_examples())}
           for p in shards]
  assert not texts[0] & texts[1]
  assert len(texts[0] | texts[1]) == len(shards[0].source.records['train'])
