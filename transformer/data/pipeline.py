"""The input pipeline: raw examples -> tokens -> objective features -> packed numpy batches.

  pipeline = Pipeline(config, objective, tokenizer, split='train')
  it = pipeline.iterator(position)          # position: 0, or a saved `it.state`
  batch = next(it)                          # dict of [B, L] / [B] numpy arrays
  saved = it.state                          # (raw examples consumed, chunks of the next one)

Determinism is the point of this file. Train data is read in a seeded order that changes every
epoch (TFDS file order + a tf.data shuffle buffer, both seeded by (train.seed, epoch)) and repeats
forever; eval data is read in order, once, the last batch padded with empty rows. Features get a
numpy rng seeded by (train.seed, process, raw index, chunk), so a restart reproduces them.

Positions count RAW examples of this process's shard. When a long text is cut into several
chunks and a batch ends inside it, `it.state` is (position, chunk) with chunk > 0: `iterator`
accepts that pair (or a plain int, meaning chunk 0) and yields exactly the batches that would have
followed, for any batch size, since rows never depend on the batch size (see packing.py).
"""

import numpy as np
import tensorflow_datasets as tfds

from transformer.data import packing
from transformer.data import sources
from transformer.errors import ConfigError

TEXT_ROLES = ('text', 'inputs', 'targets')


def _epoch_seed(seed, epoch):
  """A 31-bit seed for (train.seed, epoch): TFDS file order and the shuffle buffer."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def parse_position(position):
  """0, n, or (n, chunk) -> (n, chunk) as ints."""
  if position is None:
    return 0, 0
  if np.ndim(position) == 0:
    return int(position), 0
  raw, chunk = (int(v) for v in position)
  return raw, chunk


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
      raise ConfigError(f'config key `train.batch_size` = {global_batch} must be a positive '
                        f'multiple of the process count {process_count}')
    self.batch_size = global_batch // process_count
    self.stream_lengths = dict(objective.stream_lengths)
    self.pack = bool(config.data.pack) and bool(objective.packable)
    self.fields = tuple(objective.example_fields)
    self.roles = tuple(f for f in self.fields if f in sources.ROLES)
    self.source = source or sources.get_source(config)
    self.source.require(self.roles)
    self._epoch_length = None

  def _dataset(self, epoch):
    """This shard's raw tf.data dataset for `epoch` (seeded order when training)."""
    seed = _epoch_seed(self.seed, epoch) if self.training else None
    ds = self.source.dataset(self.split, self.roles, shard=self.shard, file_seed=seed)
    if self.training:
      buffer = max(1, int(self.config.data.shuffle_buffer))
      ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    return ds

  @property
  def epoch_length(self):
    """Raw examples in this process's shard of the split."""
    if self._epoch_length is None:
      ds = self.source.dataset(self.split, self.roles, shard=self.shard)
      n = int(ds.cardinality())
      if n < 0:   # unknown: count once
        n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
      if n == 0:
        key = 'train_split' if self.training else 'eval_split'
        raise ConfigError(f'config key `data.{key}` = {self.split!r}: no examples for process '
                          f'{self.shard[0]} of {self.shard[1]} in {self.source.name!r}; '
                          f'pick a larger split or source')
      self._epoch_length = n
    return self._epoch_length

  def raw_examples(self, start=0):
    """(index, raw example dict) from raw index `start`: forever when training, else one pass."""
    n = self.epoch_length
    epoch, offset = divmod(start, n) if self.training else (0, start)
    index = start
    while True:
      for example in tfds.as_numpy(self._dataset(epoch).skip(offset)):
        yield index, {role: (int(value) if role == 'label' else
                             value.decode('utf-8', errors='replace'))
                      for role, value in example.items()}
        index += 1
      if not self.training:
        return
      epoch, offset = epoch + 1, 0

  def tokenize(self, raw):
    """Raw strings -> int32 id arrays (no EOS); 'text' cut into objective.text_chunk_len chunks.

    Returns the list of examples (one per chunk) that `objective.features` expects.
    """
    example = {}
    for role, value in raw.items():
      example[role] = (np.asarray(self.tokenizer.encode(value), np.int32)
                       if role in TEXT_ROLES else value)
    chunk_len = getattr(self.objective, 'text_chunk_len', None)
    if not chunk_len or 'text' not in example:
      return [example]
    text = example['text']
    return [{**example, 'text': text[i:i + chunk_len]} for i in range(0, len(text), chunk_len)]

  def examples(self, position=0):
    """((raw index, chunk), truncated features) from `position` on, in stream order."""
    start, first_chunk = parse_position(position)
    process = self.shard[0]
    for index, raw in self.raw_examples(start):
      chunks = self.tokenize(raw)
      for c in range(first_chunk if index == start else 0, len(chunks)):
        rng = np.random.default_rng([self.seed, process, index, c])
        features = self.objective.features(chunks[c], rng)
        if features is None:
          continue
        features = packing.truncate(features, self.stream_lengths)
        if all(len(features[s]) for s in self.stream_lengths):
          yield (index, c), features

  def iterator(self, position=0):
    """A `DataIterator` of batches starting at `position` (an int or a saved `it.state`)."""
    return DataIterator(self, position)


class DataIterator:
  """Iterator of numpy batches that knows the position to resume from."""

  def __init__(self, pipeline, position=0):
    self.pipeline = pipeline
    self.position, self.chunk = parse_position(position)
    self.batches_yielded = 0
    self._batches = packing.batches(
        pipeline.examples((self.position, self.chunk)), pipeline.stream_lengths,
        pipeline.batch_size, pipeline.pack, partial_last=not pipeline.training)

  @property
  def state(self):
    """(raw examples consumed, chunks of the next raw example consumed): pass to iterator()."""
    return (self.position, self.chunk)

  def __iter__(self):
    return self

  def __next__(self):
    batch, next_key = next(self._batches)
    if next_key is None:    # the end of an eval pass
      self.position, self.chunk = self.pipeline.epoch_length, 0
    else:
      self.position, self.chunk = next_key
    self.batches_yielded += 1
    return batch
