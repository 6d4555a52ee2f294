"""What every objective shares: the weighted float32 cross-entropy, metric dicts and host helpers.

An objective owns the batch-to-loss logic of one task (t5x draws the same line between
`models.py` and the network). The trainer only sees the attributes and methods of `Objective`:

  head             'lm' | 'classification': which head the model is built with
  example_fields   the raw fields the data pipeline must deliver, tokenized, per example
  stream_lengths   {'inputs': L} / {'targets': L} / both: the padded length of each token stream
  packable         whether several examples may share a row (segment ids 1, 2, ...)
  text_chunk_len   the pipeline cuts a tokenized 'text' field into chunks of at most this many
                   tokens, one example each (None: no chunking)
  features(example, rng)                    host side, numpy: per-stream 1-D arrays + scalars
  loss_and_metrics(model, batch, *, deterministic) -> (loss, {name: (sum, count)})
  predict(model, batch, tokenizer, *, max_new_tokens) -> [dict(input, prediction, reference)]
  eval_metrics(model, batch)                 loss_and_metrics without dropout, metrics only
  score(samples) -> {name: float}            corpus scores of predictions ('bleu' for seq2seq)

Metrics are (sum, count) pairs so that the trainer can add them over steps and devices and
divide once; `loss` is the mean cross-entropy per weighted token, so exp(loss) is perplexity.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer.errors import ConfigError


def cross_entropy(logits, labels, weights, *, z_loss=0.0):
  """Weighted cross-entropy in float32, whatever the dtype of `logits`.

  Args:
    logits: [..., V] unnormalised scores.
    labels: [...] int ids of the correct class.
    weights: [...] 0/1 (or real) weight of each position; padding has weight 0.
    z_loss: coefficient of the auxiliary log(Z)**2 term (PaLM) that keeps the softmax
      normaliser near 1; 0 disables it.

  Returns:
    (loss, metrics): loss = (sum of weighted cross-entropy + z-loss) / max(sum of weights, 1);
    metrics: 'loss' and 'accuracy' as (sum, count), plus 'z_loss' when enabled. Positions of
    weight 0 are selected away, not multiplied by 0: a NaN/Inf logit there (padding) changes
    neither the loss, the metrics nor the gradient.
  """
  weights = weights.astype(jnp.float32)
  logits = jnp.where((weights != 0)[..., None], logits.astype(jnp.float32), 0.0)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  xent = log_z - label_logit
  count = jnp.sum(weights)
  xent_sum = jnp.sum(xent * weights)
  total = xent_sum
  metrics = {
      'loss': (xent_sum, count),
      'accuracy': accuracy(logits, labels, weights),
  }
  if z_loss:
    z_sum = jnp.sum(z_loss * jnp.square(log_z) * weights)
    total = total + z_sum
    metrics['z_loss'] = (z_sum, count)
  return total / jnp.maximum(count, 1.0), metrics


def accuracy(logits, labels, weights):
  """(number of weighted positions whose argmax equals the label, sum of weights)."""
  weights = weights.astype(jnp.float32)
  correct = jnp.argmax(logits, axis=-1) == labels
  return jnp.sum(jnp.where(correct & (weights != 0), weights, 0.0)), jnp.sum(weights)


def next_token_weights(segment_ids):
  """Weights for 'position i predicts token i+1' inside one array of packed segments.

  Returns [B, L] float32: 1 at i when i+1 is in the same non-padding segment, else 0 (the last
  token of every segment, padding, and the last column predict nothing).
  """
  same = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0)
  return jnp.pad(same, ((0, 0), (0, 1))).astype(jnp.float32)


def next_token_labels(tokens):
  """[B, L] labels for next-token prediction: tokens shifted left by one, 0 in the last column."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))


def shift_right_in_segments(tokens, segment_ids, start_id=0):
  """Decoder inputs for teacher forcing: each token moves one step right inside its segment.

  The first token of every segment becomes `start_id` (model.decoder_start_id: 0 for T5, 2 for
  Hugging Face BART), so packed examples never see each other:
  out[i] = tokens[i-1] if segment_ids[i-1] == segment_ids[i] else start_id (0 on padding).
  """
  shifted = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  prev_seg = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
  starts = jnp.where(segment_ids > 0, start_id, 0)
  return jnp.where(prev_seg == segment_ids, shifted, starts).astype(tokens.dtype)


def data_value(config, key, low, high, *, inclusive_high=False):
  """Read `config.data.<key>` and check low < value < high (or <= high); ConfigError otherwise."""
  value = config.data[key]
  ok = low < value <= high if inclusive_high else low < value < high
  if not ok:
    bound = ']' if inclusive_high else ')'
    raise ConfigError(f'config key `data.{key}` = {value!r} must lie in ({low}, {high}{bound}; '
                      f'set e.g. --config.data.{key}=<value in range>')
  return value


def first_segments(batch, stream, rows):
  """The first packed example of each of the first `rows` rows of `stream`, as Python lists.

  Used by `predict`: text samples come from single examples even when rows are packed.
  Extra per-token arrays `<stream>_<name>` are cut the same way and returned alongside.
  """
  tokens = np.asarray(batch[stream])
  segs = np.asarray(batch[f'{stream}_segment_ids'])
  extras = {k[len(stream) + 1:]: np.asarray(v) for k, v in batch.items()
            if k.startswith(stream + '_') and k not in (f'{stream}_segment_ids',
                                                        f'{stream}_positions')
            and np.ndim(v) == 2}
  out = []
  for r in range(min(rows, tokens.shape[0])):
    keep = segs[r] == segs[r, 0]
    if segs[r, 0] == 0:
      continue  # an all-padding row (the tail of an eval set)
    out.append(dict(tokens=tokens[r][keep].tolist(),
                    **{name: arr[r][keep].tolist() for name, arr in extras.items()}))
  return out


def pad_rows(rows, pad_id=0):
  """Lists of ids -> ([N, Lmax] int32 tokens, [N, Lmax] int32 segment ids 1/0)."""
  width = max(1, max((len(r) for r in rows), default=1))
  tokens = np.full((len(rows), width), pad_id, np.int32)
  segs = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
    segs[i, :len(r)] = 1
  return tokens, segs


def special_ids(tokenizer):
  """Every id that is structure rather than text: pad/eos/unk/bos, mask/sep/cls and sentinels."""
  ids = {tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.bos_id}
  for name in ('mask_id', 'sep_id', 'cls_id'):
    value = getattr(tokenizer, name, None)
    if value is not None and value >= 0:
      ids.add(value)
  ids.update(getattr(tokenizer, 'sentinel_ids', ()) or ())
  return sorted(i for i in ids if i is not None and i >= 0)


def as_rng(rng):
  """`features` accepts a numpy Generator, a seed, or None (fresh entropy)."""
  return np.random.default_rng(rng)


def int32(values):
  return np.asarray(values, dtype=np.int32)


class Objective:
  """Base class: the attributes every objective sets, and the helpers they share.

  Subclasses set `name`, `head`, `example_fields`, `families` and implement `features`,
  `loss_and_metrics` and `predict`. `stream_lengths`, `packable` and `text_chunk_len` are set in
  `__init__` from the config.
  """

  name = ''
  head = 'lm'
  example_fields = ('text',)
  families = ()

  def __init__(self, config, tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.family = config.model.family
    self.seq_len = int(config.data.seq_len)
    if self.seq_len < 4:
      raise ConfigError(f'config key `data.seq_len` = {self.seq_len} is too short; '
                        f'use at least 4, e.g. --config.data.seq_len=128')
    self.targets_len = int(config.data.get('targets_len', 0) or 0) or self.seq_len
    self.packable = bool(config.data.get('pack', True))
    self.text_chunk_len = None
    self.stream_lengths = {}
    self.z_loss = float(config.get('train', {}).get('z_loss', 0.0) or 0.0)
    self.decoder_start_id = int(config.model.get('decoder_start_id', 0))

  def __repr__(self):
    return (f'{type(self).__name__}(family={self.family!r}, streams={self.stream_lengths}, '
            f'packable={self.packable}, text_chunk_len={self.text_chunk_len})')

  def eval_metrics(self, model, batch):
    """Metrics of one eval batch: the training loss without dropout."""
    return self.loss_and_metrics(model, batch, deterministic=True)[1]

  def score(self, samples):
    """Corpus-level scores of `predict` samples (e.g. {'bleu': ...}); {} where none applies."""
    del samples
    return {}

  def decode(self, ids):
    return self.tokenizer.decode([int(i) for i in ids])
