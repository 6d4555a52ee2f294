"""Rows and batches: per-example features -> fixed-shape numpy batch dicts.

An example is what `objective.features` returns: for each stream S in `stream_lengths` a 1-D
array S plus aligned per-token arrays S_<name>, per-example scalars, and the arrays of fields
passed through whole (a kind that is never packed, e.g. an image; data/fields.py). A batch holds,
per stream, S, S_segment_ids (0 = padding, 1, 2, ... = the examples of a row), S_positions
(0-based inside each example) and the S_<name> arrays, all [B, L_S]; scalars are [B]; a passed
array of shape [...] is [B, ...] in its own dtype, uncut.

Three ways to fill rows; all depend on the example order alone, never on the batch size, so a
saved position resumes exactly whatever the batch size (see pipeline.py):

Stream packing (`stream_rows`; the pretraining objectives: causal LM, prefix LM, MLM, span
corruption). The documents form one token stream that is cut into rows exactly as long as the
streams allow (t5x / seqio and nanoGPT do the same): a document that does not fit the rest of a
row fills it and goes on in the next row. Each piece of a document is one segment (its own
segment id, positions from 0), so attention never crosses documents nor rows; a row's position
is (document, token offset), and the piece at that offset starts the row. The objective turns
a piece of n text tokens into features (`objective.piece`) and says how long they will be
(`objective.piece_lengths(n, first=, last=, key=)`, non-decreasing in n); the packer takes the
longest piece that fits the row, at least `objective.min_piece` tokens (or the document's rest).
`key` is the piece's random key, fixed by where its row starts (document, offset) and its place
in the row, not by its length: `piece` is given `np.random.default_rng(key)`, so a random choice
that changes the lengths (UL2's denoiser, its prefix split) is drawn alike in both and the
prediction stays exact; and the keys of a row's coming pieces are known before it is cut, which
lets the packer balance two streams (stream_balance.py: UL2 on an encoder-decoder fills both).
What each objective does with a piece (first / last: it starts / ends its document):
  causal LM    [bos] only when first, [eos] only when last: a split document reads as one text
               whose next-token loss stops at the row's edge (the first token of a continuing
               piece is context only, as in nanoGPT).
  prefix LM    the same, with the prefix (round(prefix_fraction * n) tokens, clipped to 1..n-1)
               taken from the piece: each row's piece is its own prefix-LM example.
  MLM          every piece is `[cls] piece [sep]` (each segment a well-formed BERT sequence,
               [cls] at position 0); the 15% masking budget is drawn over the whole row
               (`objective.finish_row`), as RoBERTa masks its cross-document rows.
  span corr.   each piece is corrupted on its own (sentinels restart at <extra_id_0>, [eos] in
               both streams); pieces are sized so that inputs and targets both fit (on a
               decoder, so that the one stream [bos] inputs [sep] targets fits).
  UL2          span corruption with one denoiser per piece, drawn from the piece's key (R, X:
               spans; S: a prefix and its continuation), its mode token first.
Greedy example packing (`batches`, window=1; objectives without pieces): an example goes into
the current row if every one of its streams still fits, otherwise it starts the next row, and a
batch ends where the next example starts a fresh row.
Window packing (`batches`, window > 1; pair data: seq2seq): up to `window` rows are open at
once and each example goes into the open row it fills most tightly (best fit, ties to the
oldest); an example that fits none closes the whole block of rows, which are emitted in the
order they were opened. A position inside a block is (first example of the block, rows of it
already emitted): the block is packed again from its first example and those rows skipped.
"""

import functools

import numpy as np

from transformer.data import stream_balance

RESERVED = ('segment_ids', 'positions')
PAIR_WINDOW = 8    # rows open at once when packing examples of pair data


def truncate(features, stream_lengths, passed=()):
  """Cut every per-token array of stream S to stream_lengths[S]; the features named in `passed`
  (fields passed through whole) are kept as they are."""
  out = {}
  for key, value in features.items():
    value = np.asarray(value)
    stream = stream_of(key, stream_lengths)
    if key in passed:
      out[key] = value
      continue
    if stream is not None:
      if value.ndim != 1:
        raise ValueError(f'feature {key!r} must be 1-D, got shape {value.shape}')
      if key != stream and key[len(stream) + 1:] in RESERVED:
        raise ValueError(f'feature {key!r} is computed by the data pipeline; do not return it')
      value = value[:stream_lengths[stream]]
    elif value.ndim != 0:
      raise ValueError(f'feature {key!r} is neither a stream of {sorted(stream_lengths)} nor '
                       f'a scalar (shape {value.shape})')
    out[key] = value
  return out


def stream_of(key, stream_lengths):
  """The stream a feature key belongs to ('inputs_labels' -> 'inputs'), or None for scalars."""
  for stream in stream_lengths:
    if key == stream or key.startswith(stream + '_'):
      return stream
  return None


def lengths(features, stream_lengths):
  return {s: len(features[s]) for s in stream_lengths}


def efficiency(batch):
  """(non-padding slots, all slots) of a batch over every stream: the packing fill ratio."""
  segs = [np.asarray(v) for k, v in batch.items() if k.endswith('_segment_ids')]
  return int(sum(np.count_nonzero(s) for s in segs)), int(sum(s.size for s in segs))


def fill(*batches):
  """The share of the batches' token slots that hold a token (perf/packing_efficiency)."""
  used, slots = map(sum, zip(*(efficiency(b) for b in batches)))
  return used / max(slots, 1)


def build(rows, stream_lengths, batch_size):
  """The numpy batch dict of `rows` (lists of examples); rows beyond them are all padding."""
  template = rows[0][0]
  batch = {}
  for key, value in template.items():
    stream, value = stream_of(key, stream_lengths), np.asarray(value)
    dtype = np.float32 if np.issubdtype(value.dtype, np.floating) else np.int32
    if stream is None and value.ndim:   # a field passed through whole keeps shape and dtype
      dtype = value.dtype
    shape = (batch_size, stream_lengths[stream]) if stream else (batch_size, *value.shape)
    batch[key] = np.zeros(shape, dtype)
  for stream, length in stream_lengths.items():
    batch[f'{stream}_segment_ids'] = np.zeros((batch_size, length), np.int32)
    batch[f'{stream}_positions'] = np.zeros((batch_size, length), np.int32)
  for r, row in enumerate(rows):
    starts = dict.fromkeys(stream_lengths, 0)
    for segment, example in enumerate(row, 1):
      for key, value in example.items():
        stream = stream_of(key, stream_lengths)
        if stream is None:
          batch[key][r] = value
        else:
          batch[key][r, starts[stream]:starts[stream] + len(value)] = value
      for stream in stream_lengths:
        n = len(example[stream])
        span = slice(starts[stream], starts[stream] + n)
        batch[f'{stream}_segment_ids'][r, span] = segment
        batch[f'{stream}_positions'][r, span] = np.arange(n)
        starts[stream] += n
  return batch


class BatchBuilder:
  """Collects truncated examples into `batch_size` rows, packed or one example per row."""

  def __init__(self, stream_lengths, batch_size, pack):
    self.stream_lengths = dict(stream_lengths)
    self.batch_size = batch_size
    self.pack = pack
    self.rows = []          # each row: list of examples
    self._used = None       # tokens used per stream in the open (last) row

  def __len__(self):
    return len(self.rows)

  @property
  def empty(self):
    return not self.rows

  def add(self, example):
    """Place `example`; False (nothing placed) when it needs a new row and the batch is full."""
    sizes = lengths(example, self.stream_lengths)
    if (self.pack and self.rows and
        all(self._used[s] + sizes[s] <= self.stream_lengths[s] for s in sizes)):
      self.rows[-1].append(example)
      for s in sizes:
        self._used[s] += sizes[s]
      return True
    if len(self.rows) >= self.batch_size:
      return False
    if self.pack:
      check_packable(example, self.stream_lengths)
    self.rows.append([example])
    self._used = sizes
    return True

  def build(self):
    """The numpy batch dict; rows never filled (the end of an eval set) are all padding."""
    return build(self.rows, self.stream_lengths, self.batch_size)


def check_packable(example, stream_lengths):
  if any(k not in stream_lengths and stream_of(k, stream_lengths) is None for k in example):
    raise ValueError('per-example scalars cannot be packed; the objective must set '
                     'packable=False')


def batches(examples, stream_lengths, batch_size, pack, *, partial_last=False, window=1):
  """Generator: (batch, next_key) from an iterable of (key, example) already truncated.

  `next_key` is the key of the first example not in the batch (None at the end of the data);
  with window > 1 it is (key of the block's first example, rows of the block emitted).
  With `partial_last`, a final incomplete batch is padded and yielded; otherwise dropped.
  """
  if pack and window > 1:
    yield from grouped(window_rows(examples, stream_lengths, window), stream_lengths,
                       batch_size, partial_last)
    return
  builder = BatchBuilder(stream_lengths, batch_size, pack)
  for key, example in examples:
    if not builder.add(example):
      yield builder.build(), key
      builder = BatchBuilder(stream_lengths, batch_size, pack)
      builder.add(example)
  if partial_last and not builder.empty:
    yield builder.build(), None


def grouped(rows, stream_lengths, batch_size, partial_last):
  """(batch, position after it) from (row, position after the row) pairs."""
  group, after = [], None
  for row, after in rows:
    group.append(row)
    if len(group) == batch_size:
      yield build(group, stream_lengths, batch_size), after
      group = []
  if partial_last and group:
    yield build(group, stream_lengths, batch_size), None


def window_rows(examples, stream_lengths, window, skip=0):
  """(row, position after it) by best fit into blocks of at most `window` open rows.

  The first `skip` rows of the first block are not yielded (a resume inside a block).
  """
  block, used, start = [], [], None
  for key, example in examples:
    sizes = lengths(example, stream_lengths)
    free = [sum(stream_lengths[s] - u[s] - sizes[s] for s in sizes) for u in used]
    fits = [i for i, u in enumerate(used)
            if all(u[s] + sizes[s] <= stream_lengths[s] for s in sizes)]
    if not fits and len(block) == window:
      yield from _emit(block, start, key, skip)
      block, used, skip = [], [], 0
      fits = []
    if not block:
      start = key
    if fits:
      best = min(fits, key=lambda i: free[i])
      block[best].append(example)
      used[best] = {s: used[best][s] + sizes[s] for s in sizes}
    else:
      check_packable(example, stream_lengths)
      block.append([example])
      used.append(sizes)
  yield from _emit(block, start, None, skip)


def _emit(block, start, next_key, skip):
  """The rows of a finished block, each with the position after it."""
  for i, row in enumerate(block):
    if i >= skip:
      if i + 1 < len(block):
        yield row, (start, i + 1)
      else:
        yield row, None if next_key is None else (next_key, 0)


def fit(piece_lengths, rest, room, *, first, min_piece):
  """The longest piece (in text tokens, at most `rest`) whose features fit `room`; 0 if none of
  at least min(min_piece, rest) tokens does. `piece_lengths` is non-decreasing in n."""
  def fits(n):
    return all(v <= room[s] for s, v in piece_lengths(n, first=first, last=n == rest).items())
  if fits(rest):
    return rest
  lo, hi = 0, rest - 1     # the largest n < rest that fits, by bisection
  while lo < hi:
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
  return lo if lo >= min(min_piece, rest) else 0


def stream_rows(documents, objective, stream_lengths, make_piece, piece_key=None):
  """(row, position after it) cut from a stream of documents; see the module docstring.

  documents: (index, start offset, int32 tokens) from a position on; make_piece(tokens, key,
  first=, last=) -> the piece's truncated features, made with np.random.default_rng(key);
  piece_key(index, offset) -> a tuple of ints, the key of the ROW that starts there: its j-th
  piece has key (*piece_key(row start), j), which objective.piece_lengths is given as key=
  (None: no keys, piece_lengths gets none and make_piece gets key=None). The position after a
  row is the (index, offset) where the next row starts; None after the last (partial) row.

  Two streams whose pieces' lengths depend on the key (UL2's denoisers on an encoder-decoder:
  R makes long inputs and short targets, X at 50% about as many of each, S any split) are
  balanced (data/stream_balance.py) so that rows end with both streams full, not one.
  """
  row, room, base = [], dict(stream_lengths), None
  balance = piece_key is not None and len(stream_lengths) == 2
  for index, offset, tokens in documents:
    while offset < len(tokens):
      if base is None:
        base = tuple(piece_key(index, offset)) if piece_key is not None else None
      key = None if base is None else (*base, len(row))
      rest = len(tokens) - offset
      keyed = {} if key is None else {'key': key}
      piece_lengths = functools.partial(objective.piece_lengths, **keyed)
      first = offset == 0
      n = fit(piece_lengths, rest, room, first=first, min_piece=objective.min_piece)
      if n and balance:
        def later(k, j=len(row), base=base):
          return functools.partial(objective.piece_lengths, key=(*base, j + k))
        n = stream_balance.balanced(piece_lengths, later, n, room, stream_lengths, first=first,
                                    rest=rest, min_piece=objective.min_piece)
      if n == 0:
        if not row:
          raise ValueError(f'no piece of a document fits an empty row of {stream_lengths}')
        yield row, (index, offset)
        row, room, base = [], dict(stream_lengths), None
        continue
      piece = make_piece(tokens[offset:offset + n], key, first=first,
                         last=offset + n == len(tokens))
      sizes = lengths(piece, stream_lengths)
      if sizes != piece_lengths(n, first=first, last=offset + n == len(tokens)):
        raise ValueError(f'{type(objective).__name__}.piece gave lengths {sizes}; '
                         'piece_lengths promised others')
      row.append(piece)
      room = {s: room[s] - sizes[s] for s in room}
      offset += n
  if row:
    yield row, None
