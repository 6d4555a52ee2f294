"""The input pipeline: raw examples -> tokens -> objective features -> packed numpy batches.

  pipeline = Pipeline(config, objective, tokenizer, split='train')
  it = pipeline.iterator(position)          # position: 0, or a saved `it.state`
  batch = next(it)                          # dict of [B, L] / [B] numpy arrays
  saved = it.state                          # (raw examples consumed, offset into the next one)

What a raw example holds is the objective's declaration (`objective.fields`, data/fields.py):
each field is read by its kind (text decoded and tokenized, a label an int, an image array passed
through), and a tokenizer is needed only where a field is text (`tokenizer` may be None then).

Determinism is the point of this file. Train data is read in a seeded order that changes every
epoch (TFDS file order + a tf.data shuffle buffer, both seeded by (train.seed, epoch)) and repeats
forever; eval data is read in order, once, the last batch padded with empty rows. Features get a
numpy rng seeded by (train.seed, process, raw index, chunk index or, for stream pieces, token
offset), so a restart reproduces them.

How rows are filled (`mode`, see packing.py): 'stream' for objectives that cut pieces out of a
token stream (pretraining; data.pack), 'window' for packed pair data, 'greedy' for other packed
objectives, 'rows' (one example or text chunk per row) when data.pack is off.

Positions count RAW examples of this process's shard. `it.state` is (raw, offset): in 'stream',
'greedy' and 'rows' modes the next row starts `offset` tokens into raw example `raw` (a text cut
into chunks of objective.text_chunk_len tokens ends batches at chunk starts); in 'window' mode
the next row is row `offset` of the block that starts at example `raw`. `iterator` accepts that
pair (or a plain int, meaning offset 0) and yields exactly the batches that would have followed,
for any batch size, since rows never depend on the batch size. Checkpoints written before
POSITION_FORMAT 2 counted chunks instead of tokens; `upgrade_position` converts them.
"""

import numpy as np
import tensorflow_datasets as tfds

from transformer.data import fields as fields_lib
from transformer.data import packing
from transformer.data import sources
from transformer.errors import ConfigError

TEXT_ROLES = ('text', 'inputs', 'targets')   # the fields of the text kind in every objective
POSITION_FORMAT = 2    # 1: (raw, chunk index); 2: (raw, token offset or rows of a block)


def _epoch_seed(seed, epoch):
  """A 31-bit seed for (train.seed, epoch): TFDS file order and the shuffle buffer."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def parse_position(position):
  """0, n, or (n, offset) -> (n, offset) as ints."""
  if position is None:
    return 0, 0
  if np.ndim(position) == 0:
    return int(position), 0
  raw, offset = (int(v) for v in position)
  return raw, offset


def upgrade_position(position, saved_format, objective):
  """A checkpoint's position in POSITION_FORMAT: format 1 counted the chunks of a text, each
  objective.text_chunk_len tokens long, so chunk c starts at token c * text_chunk_len."""
  raw, offset = parse_position(position)
  if saved_format == 1:
    offset *= getattr(objective, 'text_chunk_len', None) or 0
  elif saved_format != POSITION_FORMAT:
    raise ConfigError(f'the checkpoint\'s data position has format {saved_format!r}, newer than '
                      f'this code ({POSITION_FORMAT}); update the code, or start a new run with '
                      '--config.checkpoint.init_from=<that run> to keep its weights')
  return raw, offset


def packing_mode(objective, pack):
  """'stream' | 'window' | 'greedy' | 'rows': how the pipeline fills rows (module docstring)."""
  if not pack:
    return 'rows'
  if getattr(objective, 'min_piece', 0) and hasattr(objective, 'piece_lengths'):
    return 'stream'
  return 'window' if getattr(objective, 'text_chunk_len', None) is None else 'greedy'


class Pipeline:
  """Batches of one split for one process; see the module docstring."""

  def __init__(self, config, objective, tokenizer, split='train', process_index=0,
               process_count=1, source=None):
    if split not in ('train', 'eval'):
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    self.config = config
    self.objective = objective
    self.tokenizer = tokenizer
    self.training = split == 'train'
    self.split = config.data.train_split if self.training else config.data.eval_split
    self.shard = (int(process_index), int(process_count))
    self.seed = int(config.train.seed)
    global_batch = int(config.train.batch_size)
    if global_batch <= 0 or global_batch % process_count:
      raise ConfigError(f'`train.batch_size={global_batch}`: must be a positive '
                        f'multiple of the process count {process_count}')
    self.batch_size = global_batch // process_count
    self.stream_lengths = dict(objective.stream_lengths)
    self.kinds = fields_lib.declared(objective)
    fields_lib.check_pack(self.kinds, bool(config.data.pack), getattr(objective, 'name', ''))
    self.passed = fields_lib.passed_through(self.kinds)
    self.pack = bool(config.data.pack) and bool(objective.packable)
    self.mode = packing_mode(objective, self.pack)
    self.fields = tuple(self.kinds)
    self.roles = self.fields
    self.source = source or sources.get_source(config)
    self.source.require(self.kinds)   # by kind: a jsonl score label must be a number
    self._epoch_length = None

  def _dataset(self, epoch):
    """This shard's raw tf.data dataset for `epoch` (seeded order when training)."""
    seed = _epoch_seed(self.seed, epoch) if self.training else None
    ds = self.source.dataset(self.split, self.kinds, shard=self.shard, file_seed=seed)
    if self.training:
      buffer = max(1, int(self.config.data.shuffle_buffer))
      ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    return ds

  @property
  def epoch_length(self):
    """Raw examples in this process's shard of the split."""
    if self._epoch_length is None:
      ds = self.source.dataset(self.split, self.kinds, shard=self.shard)
      n = int(ds.cardinality())
      if n < 0:   # unknown: count once
        n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
      if n == 0:
        key = 'train_split' if self.training else 'eval_split'
        raise ConfigError(f'`data.{key}={self.split!r}`: no examples for process '
                          f'{self.shard[0]} of {self.shard[1]} in {self.source.name!r}; '
                          f'pick a larger split or source')
      self._epoch_length = n
    return self._epoch_length

  def raw_examples(self, start=0):
    """(index, raw example dict) from raw index `start`: forever when training, else one pass;
    each field read by its declared kind (text a str, a label an int, an image an array)."""
    n = self.epoch_length
    epoch, offset = divmod(start, n) if self.training else (0, start)
    index = start
    while True:
      for example in tfds.as_numpy(self._dataset(epoch).skip(offset)):
        yield index, {role: self.kinds[role].read(value) for role, value in example.items()}
        index += 1
      if not self.training:
        return
      epoch, offset = epoch + 1, 0

  def tokenize(self, raw):
    """Text fields -> int32 id arrays (no EOS), other fields as read; 'text' cut into
    objective.text_chunk_len chunks.

    Returns the list of examples (one per chunk) that `objective.features` expects.
    """
    example = {}
    for role, value in raw.items():
      example[role] = (np.asarray(self.tokenizer.encode(value), np.int32)
                       if self.kinds[role].tokenized else value)
    chunk_len = getattr(self.objective, 'text_chunk_len', None)
    if not chunk_len or 'text' not in example:
      return [example]
    text = example['text']
    return [{**example, 'text': text[i:i + chunk_len]} for i in range(0, len(text), chunk_len)]

  def examples(self, position=0):
    """((raw index, token offset), truncated features) from `position` on, in stream order."""
    start, first_offset = parse_position(position)
    chunk_len = getattr(self.objective, 'text_chunk_len', None) or 1
    process = self.shard[0]
    # eval data without training's random augmentation, where an objective has any (images)
    make = (self.objective.features if self.training else
            getattr(self.objective, 'eval_features', self.objective.features))
    for index, raw in self.raw_examples(start):
      chunks = self.tokenize(raw)
      first = -(-first_offset // chunk_len) if index == start else 0
      for c in range(first, len(chunks)):
        rng = np.random.default_rng([self.seed, process, index, c])
        features = make(chunks[c], rng)
        if features is None:
          continue
        features = packing.truncate(features, self.stream_lengths, self.passed)
        if all(len(features[s]) for s in self.stream_lengths):
          yield (index, c * chunk_len), features

  def documents(self, position=0):
    """(raw index, start offset, text tokens) from `position` on: the stream packing input."""
    start, offset = parse_position(position)
    for index, raw in self.raw_examples(start):
      tokens = np.asarray(self.tokenizer.encode(raw['text']), np.int32)
      yield index, (offset if index == start else 0), tokens

  def _piece_key(self, index, offset):
    """The random key of the row that starts at token `offset` of raw example `index`; its
    pieces' keys follow from it (packing.stream_rows)."""
    return (self.seed, self.shard[0], index, offset)

  def _piece(self, tokens, key, *, first, last):
    rng = np.random.default_rng(key)
    return packing.truncate(self.objective.piece(tokens, rng, first=first, last=last),
                            self.stream_lengths)

  def rows(self, position=0):
    """(row, position after it) of the 'stream' or 'window' mode from `position` on."""
    if self.mode == 'stream':
      rows = packing.stream_rows(self.documents(position), self.objective, self.stream_lengths,
                                 self._piece, self._piece_key)
      return self._finished(rows, parse_position(position))
    raw, skip = parse_position(position)
    examples = (((index, 0), f) for (index, _), f in self.examples(raw))
    return ((row, after if after is None else (after[0][0], after[1])) for row, after in
            packing.window_rows(examples, self.stream_lengths, packing.PAIR_WINDOW, skip))

  def _finished(self, rows, start):
    """Rows through `objective.finish_row(pieces, rng)` where it has one (MLM masks a whole row),
    its rng seeded by the position the row starts at."""
    finish = getattr(self.objective, 'finish_row', None)
    for row, after in rows:
      if finish is not None:
        row = finish(row, np.random.default_rng([self.seed, self.shard[0], *start, 1]))
      yield row, after
      start = after

  def batches(self, position=0):
    """(batch, position after it; None at the end of an eval pass) from `position` on."""
    if self.mode in ('stream', 'window'):
      return packing.grouped(self.rows(position), self.stream_lengths, self.batch_size,
                             partial_last=not self.training)
    return packing.batches(self.examples(position), self.stream_lengths, self.batch_size,
                           self.pack, partial_last=not self.training)

  def iterator(self, position=0):
    """A `DataIterator` of batches starting at `position` (an int or a saved `it.state`)."""
    return DataIterator(self, position)


class DataIterator:
  """Iterator of numpy batches that knows the position to resume from."""

  def __init__(self, pipeline, position=0):
    self.pipeline = pipeline
    self.position, self.offset = parse_position(position)
    self.batches_yielded = 0
    self._batches = pipeline.batches((self.position, self.offset))

  @property
  def state(self):
    """(raw examples consumed, offset into the next one; see the module docstring)."""
    return (self.position, self.offset)

  def __iter__(self):
    return self

  def __next__(self):
    batch, after = next(self._batches)
    if after is None:    # the end of an eval pass
      self.position, self.offset = self.pipeline.epoch_length, 0
    else:
      self.position, self.offset = after
    self.batches_yielded += 1
    return batch
