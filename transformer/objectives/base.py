"""What every objective shares: the Objective API and host helpers (the losses are in losses.py).

An objective owns the batch-to-loss logic of one task (t5x draws the same line between
`models.py` and the network). The trainer only sees the attributes and methods of `Objective`:

  head             'lm' | 'classification': which head the model is built with
  fields           the input contract: {field: kind} of the raw example the data pipeline
                   delivers (data/fields.py: TEXT tokenized, LABEL an int, IMAGE an array
                   passed through); `example_fields` is its tuple of names
  tokens           the special tokens (names of the registry, data/special_tokens.py) the
                   features insert; `tokens_needed(family)` where they differ by family
  stream_lengths   {'inputs': L} / {'targets': L} / both: the padded length of each token stream
  packable         whether several examples may share a row (segment ids 1, 2, ...)
  text_chunk_len   the pipeline cuts a tokenized 'text' field into chunks of at most this many
                   tokens, one example each (None: no chunking)
  features(example, rng)                    host side, numpy: per-stream 1-D arrays + scalars
  min_piece        > 0: the objective cuts pieces out of a token stream (full packing, see
                   data/packing.py) with the two methods below; 0: examples only
  piece_lengths(n, *, first, last, key=None) -> {stream: length} of the features of an
                   n-token piece, exactly; key: the piece's random key (None where there is
                   none: then the lengths must not be random), fixed by where the piece's row
                   starts and the piece's place in it (data/packing.py)
  piece(tokens, rng, *, first, last)        the features of a piece of a document (first /
                                            last: the piece starts / ends the document); the
                                            packer gives rng = np.random.default_rng(key), fresh,
                                            so a choice that sets the lengths (UL2's denoiser)
                                            is drawn from it as piece_lengths draws it from key
  finish_row(pieces, rng)                   optional: the pieces of a packed row, made final
                                            together (MLM draws its masking budget per row)
  loss_and_metrics(model, batch, *, deterministic) -> (loss, {name: (sum, count)})
  predict(model, batch, tokenizer, *, max_new_tokens) -> [dict(input, prediction, reference)]
                   text samples: the first example of up to `log.samples` rows; objectives
                   that generate also take spec= (a models.decoding.Spec), limit=N (every
                   example of the batch, up to N, in fixed-shape chunks: eval decoding) and
                   first_index=K (the batch's first example is example K of the eval set:
                   a sampled example's noise follows its index). Decoding never chooses an
                   id past tokenizer.vocab_size (the model may have more rows)
  eval_metrics(model, batch)                 loss_and_metrics without dropout, metrics only;
                   plus, under the names in `gathered`, [B] arrays of each example (e.g. its
                   prediction, label and weight) that the eval concatenates over the whole
                   eval set and hands to `corpus_scores(arrays) -> {name: float}` once
                   (`gathered_metrics` its names: F1, Matthews, correlations)
  fields_for(config)  classmethod: the declaration for a config (default `fields`; the
                   classification objective adds 'text_pair' for pairs)
  check_config(config)                       classmethod: the objective's own config keys
                                            checked before anything runs (ConfigError)
  corpus_metrics   the names `score` returns (() when the objective has none; seq2seq: bleu,
                   and rouge1/rouge2/rougeL for summarisation-style data)
  score(samples) -> {name: float}            corpus scores of predictions
  frozen()         the arrays the loss reads but never trains ({} for most; a distillation
                   teacher's parameters). The trainer passes them to its jitted steps as an
                   argument and binds them with `reading(frozen)` while it traces, so they are
                   inputs of the compiled program, not constants baked into it; the loss
                   reads `self.bound` (None outside a trainer's step: its own arrays)

Metrics are (sum, count) pairs so that the trainer can add them over steps and devices and
divide once; `loss` is the mean cross-entropy per weighted token, so exp(loss) is perplexity.
"""

import contextlib
import functools

import numpy as np

from transformer.data import fields as fields_lib
from transformer.data import special_tokens
from transformer.errors import ConfigError
from transformer.models.hparams import HParams


def data_value(config, key, low, high, *, inclusive_high=False):
  """Read `config.data.<key>` and check low < value < high (or <= high); ConfigError otherwise."""
  value = config.data[key]
  ok = low < value <= high if inclusive_high else low < value < high
  if not ok:
    bound = ']' if inclusive_high else ')'
    raise ConfigError(f'`data.{key}={value!r}`: must lie in ({low}, {high}{bound}; '
                      f'set e.g. --config.data.{key}=<value in range>')
  return value


def _per_token(batch, stream):
  """(tokens, segment ids, {name: other per-token array of the stream}) as numpy."""
  extras = {k[len(stream) + 1:]: np.asarray(v) for k, v in batch.items()
            if k.startswith(stream + '_') and k not in (f'{stream}_segment_ids',
                                                        f'{stream}_positions')
            and np.ndim(v) == 2}
  return np.asarray(batch[stream]), np.asarray(batch[f'{stream}_segment_ids']), extras


def _example(tokens, extras, r, keep):
  return dict(tokens=tokens[r][keep].tolist(),
              **{name: arr[r][keep].tolist() for name, arr in extras.items()})


def first_segments(batch, stream, rows):
  """The first packed example of each of the first `rows` rows of `stream`, as Python lists.

  Used by `predict`: text samples come from single examples even when rows are packed.
  Extra per-token arrays `<stream>_<name>` are cut the same way and returned alongside.
  """
  tokens, segs, extras = _per_token(batch, stream)
  out = []
  for r in range(min(rows, tokens.shape[0])):
    if segs[r, 0] == 0:
      continue  # an all-padding row (the tail of an eval set)
    out.append(_example(tokens, extras, r, segs[r] == segs[r, 0]))
  return out


def examples(batch, stream, limit):
  """Every packed example of `stream`, row by row, up to `limit` of them (as first_segments).

  The streams of a pair are packed together, so the k-th example of 'inputs' and of 'targets'
  are the two sides of one pair."""
  tokens, segs, extras = _per_token(batch, stream)
  out = []
  for r in range(tokens.shape[0]):
    for s in np.unique(segs[r][segs[r] > 0]):
      if len(out) == limit:
        return out
      out.append(_example(tokens, extras, r, segs[r] == s))
  return out


def pad_rows(rows, pad_id=0, width=None):
  """Lists of ids -> ([N, W] int32 tokens, [N, W] int32 segment ids 1/0); W = `width` or the
  longest row."""
  width = width or max(1, max((len(r) for r in rows), default=1))
  tokens = np.full((len(rows), width), pad_id, np.int32)
  segs = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
    segs[i, :len(r)] = 1
  return tokens, segs


def decode_rows(rows, fn, *, pad_id, width=None, chunk=None, index=None):
  """One output id list per row of `rows` (id lists), from fn(tokens [C, W], segs [C, W],
  index [C]) -> [C, N]: rows padded to `width` (default the longest), `chunk` rows per call
  (default all; the last chunk is filled up with copies of its first row, so every call has one
  shape). `index`: each row's index in the whole request (default 0, 1, ...), for sampling."""
  fill, chunk = chunk is not None, chunk or max(len(rows), 1)
  index = list(range(len(rows))) if index is None else list(index)
  out = []
  for start in range(0, len(rows), chunk):
    part, at = rows[start:start + chunk], index[start:start + chunk]
    filled = part + [part[0]] * (chunk - len(part)) if fill else part
    at = at + [at[0]] * (chunk - len(part)) if fill else at
    result = np.asarray(fn(*pad_rows(filled, pad_id, width), np.asarray(at, np.int32)))
    out += [row.tolist() for row in result[:len(part)]]
  return out


def until_eos(ids, eos_id):
  """The ids before the first EOS."""
  return ids[:ids.index(eos_id)] if eos_id in ids else ids


def special_ids(tokenizer):
  """Every id that is structure rather than text: the ids of every entry of the special-token
  registry (pad/eos/unk/bos, mask/sep/cls, the sentinels, ...) that `tokenizer` has."""
  return sorted({i for token in special_tokens.TOKENS
                 for i in special_tokens.ids_of(tokenizer, token.name)})


def as_rng(rng):
  """`features` accepts a numpy Generator, a seed, or None (fresh entropy)."""
  return np.random.default_rng(rng)


def int32(values):
  return np.asarray(values, dtype=np.int32)


class Objective:
  """Base class: the attributes every objective sets, and the helpers they share.

  Subclasses set `name`, `head`, `fields`, `families` and implement `features`,
  `loss_and_metrics` and `predict`. `stream_lengths`, `packable` and `text_chunk_len` are set in
  `__init__` from the config.
  """

  name = ''
  head = 'lm'
  fields = {'text': fields_lib.TEXT}
  example_fields = ('text',)   # the names of `fields`, set for every subclass
  families = ()
  tokens = ()              # special tokens the examples need: bos, eos, sep, cls, mask, sentinel
  min_piece = 0
  bound = None             # the step's `frozen` argument while a trainer traces (reading)

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    cls.example_fields = tuple(cls.fields)

  @classmethod
  def check_config(cls, config):
    """Raise ConfigError for a bad value of the objective's own keys (config.validate calls it,
    before a tokenizer or a run directory exists); most objectives check theirs in __init__."""
    del config

  @classmethod
  def tokens_needed(cls, family):
    """The special tokens `features` inserts on `family` (objectives.get checks the tokenizer)."""
    del family
    return cls.tokens

  def __init__(self, config, tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.family = config.model.family
    self.seq_len = int(config.data.seq_len)
    if self.seq_len < 4:
      raise ConfigError(f'`data.seq_len={self.seq_len}`: too short; '
                        f'use at least 4, e.g. --config.data.seq_len=128')
    self.targets_len = int(config.data.targets_len) or self.seq_len
    fields_lib.check_pack(self.fields, bool(config.data.pack), self.name)
    self.packable = bool(config.data.pack)
    self.text_chunk_len = None
    self.stream_lengths = {}
    self.z_loss = float(config.train.z_loss)
    # model.kernels: the cross-entropy's kernel set (a run saved before the key: the default)
    self.kernels = str(config.model.get('kernels', HParams.kernels))
    self.decoder_start_id = int(config.model.decoder_start_id)

  def __repr__(self):
    return (f'{type(self).__name__}(family={self.family!r}, streams={self.stream_lengths}, '
            f'packable={self.packable}, text_chunk_len={self.text_chunk_len})')

  @classmethod
  def fields_for(cls, config):
    """The fields this objective reads under `config` (the class's declaration)."""
    del config
    return dict(cls.fields)

  def frozen(self):
    """{name: pytree of arrays} the loss reads but never trains ({}: none)."""
    return {}

  @contextlib.contextmanager
  def reading(self, frozen):
    """While a step is traced: `self.bound` is `frozen`, that step's traced argument (None:
    the objective reads its own arrays)."""
    saved, self.bound = self.bound, frozen
    try:
      yield
    finally:
      self.bound = saved

  def eval_metrics(self, model, batch):
    """Metrics of one eval batch: the training loss without dropout."""
    return self.loss_and_metrics(model, batch, deterministic=True)[1]

  corpus_metrics = ()
  gathered = ()            # the [B] arrays eval_metrics adds for corpus_scores
  gathered_metrics = ()    # the names corpus_scores returns

  def corpus_scores(self, gathered):
    """{name: score} of the whole eval set from the concatenated `gathered` arrays."""
    del gathered
    return {}

  def generation_prompt(self, ids):
    """(model input ids, whether a decoder-only prompt attends to itself bidirectionally) for
    generating from the text `ids`, laid out as in training; objectives that do not generate
    refuse."""
    raise ConfigError(f'`objective={self.name}`: its model does not generate text; generate '
                      'from a causal_lm, prefix_lm, seq2seq or span_corruption run')

  def score(self, samples):
    """Corpus-level scores of `predict` samples (e.g. {'bleu': ...}); {} where none applies."""
    del samples
    return {}

  def decode(self, ids):
    return self.tokenizer.decode([int(i) for i in ids])

  @functools.cached_property
  def byte_table(self):
    """(bytes, leading, starts) [tokenizer vocab] numpy tables for bits per byte
    (losses.label_bytes), or None for a tokenizer without `byte_lengths`: the UTF-8 bytes of
    each id's text (structure ids none), its dropped leading space, and the ids after which
    text starts (bos, sep, cls, eos, pad and model.decoder_start_id; not mask or sentinels,
    which sit inside a text)."""
    tok = self.tokenizer
    if not hasattr(tok, 'byte_lengths'):
      return None
    lengths, leading = (np.array(t, np.float32) for t in tok.byte_lengths())
    structure = [i for i in special_ids(tok) if i < len(lengths)]
    lengths[structure], leading[structure] = 0, 0
    starts = np.zeros_like(lengths)
    for i in (tok.bos_id, tok.sep_id, tok.cls_id, tok.eos_id, tok.pad_id, self.decoder_start_id):
      if i is not None and 0 <= i < len(starts):
        starts[i] = 1
    return lengths, leading, starts
