"""Rows and batches: per-example features -> fixed-shape numpy batch dicts.

An example is what `objective.features` returns: for each stream S in `stream_lengths` a 1-D
array S plus aligned per-token arrays S_<name>, and per-example scalars. A batch holds, per stream,
S, S_segment_ids (0 = padding, 1, 2, ... = the examples of a row), S_positions (0-based inside
each example) and the S_<name> arrays, all [B, L_S]; scalars are [B].

Packing fills rows in order: an example goes into the current row if every one of its streams
still fits, otherwise it starts the next row. Only one row is ever open, so the rows depend on the
example order alone, never on the batch size, and a batch always ends where the next example
starts a fresh row: this is what makes resuming from a position exact.
"""

import numpy as np

RESERVED = ('segment_ids', 'positions')


def truncate(features, stream_lengths):
  """Cut every per-token array of stream S to stream_lengths[S]."""
  out = {}
  for key, value in features.items():
    value = np.asarray(value)
    stream = stream_of(key, stream_lengths)
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
    if self.pack and any(k not in self.stream_lengths and stream_of(k, self.stream_lengths) is None
                         for k in example):
      raise ValueError('per-example scalars cannot be packed; the objective must set '
                       'packable=False')
    self.rows.append([example])
    self._used = sizes
    return True

  def build(self):
    """The numpy batch dict; rows never filled (the end of an eval set) are all padding."""
    template = self.rows[0][0]
    batch = {}
    for key, value in template.items():
      stream = stream_of(key, self.stream_lengths)
      dtype = np.float32 if np.issubdtype(np.asarray(value).dtype, np.floating) else np.int32
      shape = (self.batch_size, self.stream_lengths[stream]) if stream else (self.batch_size,)
      batch[key] = np.zeros(shape, dtype)
    for stream, length in self.stream_lengths.items():
      batch[f'{stream}_segment_ids'] = np.zeros((self.batch_size, length), np.int32)
      batch[f'{stream}_positions'] = np.zeros((self.batch_size, length), np.int32)
    for r, row in enumerate(self.rows):
      starts = dict.fromkeys(self.stream_lengths, 0)
      for segment, example in enumerate(row, 1):
        for key, value in example.items():
          stream = stream_of(key, self.stream_lengths)
          if stream is None:
            batch[key][r] = value
          else:
            batch[key][r, starts[stream]:starts[stream] + len(value)] = value
        for stream in self.stream_lengths:
          n = len(example[stream])
          span = slice(starts[stream], starts[stream] + n)
          batch[f'{stream}_segment_ids'][r, span] = segment
          batch[f'{stream}_positions'][r, span] = np.arange(n)
          starts[stream] += n
    return batch


def batches(examples, stream_lengths, batch_size, pack, *, partial_last=False):
  """Generator: (batch, next_key) from an iterable of (key, example) already truncated.

  `next_key` is the key of the first example not in the batch (None at the end of the data).
  With `partial_last`, a final incomplete batch is padded and yielded; otherwise dropped.
  """
  builder = BatchBuilder(stream_lengths, batch_size, pack)
  for key, example in examples:
    if not builder.add(example):
      yield builder.build(), key
      builder = BatchBuilder(stream_lengths, batch_size, pack)
      builder.add(example)
  if partial_last and not builder.empty:
    yield builder.build(), None
