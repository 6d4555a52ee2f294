"""T5 span corruption (Raffel et al. 2020, section 3.1.4) for encoder-decoder and decoder-only
models.

For a chunk of n text tokens, round(n * noise_density) tokens (at least 1, at most n - 1) are
noise, grouped into round(noise / mean_noise_span_length) spans (at least 1, at most the number
of sentinels). Span lengths and the lengths of the text runs between them are uniformly random
compositions, and the chunk always starts with text and ends with noise, as in T5. Then

  inputs  = text_0 <extra_id_0> text_1 <extra_id_1> ... text_k <extra_id_k> [eos]
  targets = <extra_id_0> noise_0 <extra_id_1> noise_1 ... <extra_id_k> noise_k [eos]

so replacing each sentinel in the inputs by its span in the targets gives the text back.
`text_chunk_len` is the longest chunk whose corrupted inputs and targets fit data.seq_len and
data.targets_len for every chunk length up to it (the job of T5's random_spans_helper).
The decoder reads the targets shifted right inside each packed segment, built in the jitted
loss from targets + targets_segment_ids so packing stays correct.

Decoder-only models (T5 Table 2's "LM" and "prefix LM" rows with the denoising objective) read
both as one stream, 'targets' (data.seq_len long):

  [bos] text_0 <extra_id_0> ... text_k <extra_id_k> [sep] <extra_id_0> noise_0 ... noise_k [eos]

with 'targets_prefix' = 1 on `[bos]` .. `[sep]` (the corrupted inputs); only the predictions of
the target part are scored (lm.decoder_lm_loss). `data.denoise_attention` says how the input
part is read: 'prefix' (bidirectionally, the prefix LM row) or 'causal' (left to right, the LM
row; still not scored). `text_chunk_len` is then the longest chunk whose stream fits data.seq_len.
"""

import numpy as np

from transformer.data import fields as fields_lib
from transformer.errors import ConfigError
from transformer.objectives import base
from transformer.objectives import lm
from transformer.objectives import seq2seq


def noise_counts(length, noise_density, mean_span_length, max_spans):
  """(noise tokens, noise spans) for a chunk of `length` tokens."""
  if length < 2:
    return 0, 0
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = min(max(int(round(num_noise / mean_span_length)), 1), num_noise, max_spans,
                  length - num_noise)
  return num_noise, num_spans


def corrupted_lengths(length, noise_density, mean_span_length, max_spans):
  """(inputs length, targets length) after corrupting `length` tokens, EOS included."""
  num_noise, num_spans = noise_counts(length, noise_density, mean_span_length, max_spans)
  return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def chunk_length(inputs_len, targets_len, noise_density, mean_span_length, max_spans):
  """The longest n such that every chunk of 1..n tokens fits both streams once corrupted."""
  return _longest(lambda i, t: i <= inputs_len and t <= targets_len, noise_density,
                  mean_span_length, max_spans)


def stream_chunk_length(stream_len, noise_density, mean_span_length, max_spans):
  """The longest n such that every chunk of 1..n tokens fits one decoder-only stream of
  `stream_len` once corrupted: [bos] + inputs without [eos] + [sep] + targets."""
  return _longest(lambda i, t: i + t + 1 <= stream_len, noise_density, mean_span_length,
                  max_spans)


def _longest(fits, noise_density, mean_span_length, max_spans):
  n = 0
  while fits(*corrupted_lengths(n + 1, noise_density, mean_span_length, max_spans)):
    n += 1
  return n


def random_composition(total, parts, rng):
  """`parts` positive ints summing to `total`, uniform over all such compositions."""
  if parts <= 1:
    return np.asarray([total], np.int64)
  cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length, noise_density, mean_span_length, max_spans, rng):
  """Boolean [length]: True on noise tokens, in spans alternating text/noise, text first."""
  num_noise, num_spans = noise_counts(length, noise_density, mean_span_length, max_spans)
  mask = np.zeros(length, bool)
  if num_spans == 0:
    return mask
  noise_lengths = random_composition(num_noise, num_spans, rng)
  text_lengths = random_composition(length - num_noise, num_spans, rng)
  start = 0
  for text_len, noise_len in zip(text_lengths, noise_lengths):
    start += text_len
    mask[start:start + noise_len] = True
    start += noise_len
  return mask


def corrupt(tokens, mask, sentinel_ids, eos_id):
  """(inputs, targets) of T5 span corruption for `tokens` given the noise `mask`."""
  inputs, targets = [], []
  span = -1
  for i, (token, noisy) in enumerate(zip(tokens.tolist(), mask.tolist())):
    if noisy:
      if i == 0 or not mask[i - 1]:
        span += 1
        inputs.append(sentinel_ids[span])
        targets.append(sentinel_ids[span])
      targets.append(token)
    else:
      inputs.append(token)
  return base.int32(inputs + [eos_id]), base.int32(targets + [eos_id])


def one_stream(inputs, targets, bos_id, sep_id):
  """The decoder-only features of a corrupted (inputs, targets) pair: 'targets' =
  [bos] + inputs without its [eos] + [sep] + targets, 'targets_prefix' 1 on [bos] .. [sep]."""
  stream = base.int32([bos_id, *inputs[:-1].tolist(), sep_id, *targets.tolist()])
  prefix = np.zeros_like(stream)
  prefix[:len(inputs) + 1] = 1
  return {'targets': stream, 'targets_prefix': prefix}


ATTENTION = ('prefix', 'causal')


class SpanCorruption(base.Objective):
  """T5 denoising: sentinel-marked inputs, sentinel + span targets, packed (one stream on a
  decoder-only model)."""

  name = 'span_corruption'
  head = 'lm'
  fields = {'text': fields_lib.TEXT}
  families = ('encoder_decoder', 'decoder')
  tokens = ('eos', 'sentinel')
  min_piece = 2    # at least one text and one noise token

  @classmethod
  def tokens_needed(cls, family):
    return ('bos', 'sep', 'eos', 'sentinel') if family == 'decoder' else cls.tokens

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.noise_density = base.data_value(config, 'noise_density', 0.0, 1.0)
    self.mean_span_length = base.data_value(config, 'mean_noise_span_length', 0.0, 1e9)
    self.sentinel_ids = list(tokenizer.sentinel_ids)
    if not self.sentinel_ids:
      raise ConfigError('span_corruption needs sentinel tokens: the tokenizer given by '
                        '`data.tokenizer` has no <extra_id_N> symbols; leave it empty to train one')
    self.attention = config.data.get('denoise_attention', 'prefix')
    if self.attention not in ATTENTION:
      raise ConfigError(f'`data.denoise_attention={self.attention!r}`: choose prefix '
                        '(bidirectional over the corrupted inputs) or causal, e.g. '
                        '--config.data.denoise_attention=prefix')
    spans = (self.noise_density, self.mean_span_length, len(self.sentinel_ids))
    if self.family == 'decoder':
      self.stream_lengths = {'targets': self.seq_len}
      self.text_chunk_len = stream_chunk_length(self.seq_len, *spans)
      key, value, fix = 'seq_len', self.seq_len, 16
    else:
      self.stream_lengths = {'inputs': self.seq_len, 'targets': self.targets_len}
      self.text_chunk_len = chunk_length(self.seq_len, self.targets_len, *spans)
      key, value, fix = 'targets_len', self.targets_len, max(8, self.seq_len // 4)
    if self.text_chunk_len < 2:
      raise ConfigError(f'`data.{key}` = {value} is too short for span corruption at noise '
                        f'density {self.noise_density}; raise it, e.g. '
                        f'--config.data.{key}={fix}')
    self.num_samples = int(config.log.samples)

  def _layout(self, inputs, targets):
    if self.family != 'decoder':
      return {'inputs': inputs, 'targets': targets}
    return one_stream(inputs, targets, self.tokenizer.bos_id, self.tokenizer.sep_id)

  def _corrupted(self, text, rng):
    rng = base.as_rng(rng)
    mask = noise_mask(len(text), self.noise_density, self.mean_span_length,
                      len(self.sentinel_ids), rng)
    return self._layout(*corrupt(text, mask, self.sentinel_ids, self.tokenizer.eos_id))

  def features(self, example, rng=None):
    return self._corrupted(np.asarray(example['text'], np.int32)[:self.text_chunk_len], rng)

  def piece_lengths(self, n, *, first, last, key=None):
    del first, last, key   # every piece is corrupted on its own; its lengths are not random
    i, t = corrupted_lengths(n, self.noise_density, self.mean_span_length,
                             len(self.sentinel_ids))
    if self.family == 'decoder':
      return {'targets': i + t + 1}
    return {'inputs': i, 'targets': t}

  def piece(self, tokens, rng=None, *, first, last):
    del first, last   # the packer sized the piece (piece_lengths): nothing is cut here
    return self._corrupted(np.asarray(tokens, np.int32), rng)

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    if self.family == 'decoder':
      return lm.decoder_lm_loss(model, batch, deterministic=deterministic, use_prefix=True,
                                prefix_attention=self.attention == 'prefix',
                                z_loss=self.z_loss, kernels=self.kernels,
                                byte_table=self.byte_table)
    return seq2seq.encoder_decoder_loss(model, batch, deterministic=deterministic,
                                        z_loss=self.z_loss, start_id=self.decoder_start_id,
                                        kernels=self.kernels, byte_table=self.byte_table)

  def generation_prompt(self, ids):
    """The text + [eos] for the encoder (a T5 model fills what its sentinels mark); on a
    decoder-only model [bos] + text + [sep], read as the inputs were in training."""
    tok = self.tokenizer
    if self.family == 'decoder':
      return [tok.bos_id, *ids, tok.sep_id], self.attention == 'prefix'
    return [*ids, tok.eos_id], False

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=32):
    tokenizer = tokenizer or self.tokenizer
    if self.family != 'decoder':
      return seq2seq.predict_encoder_decoder(model, batch, tokenizer, rows=self.num_samples,
                                             max_new_tokens=max_new_tokens)
    splits = [(e['tokens'][:sum(e['prefix'])], e['tokens'][sum(e['prefix']):])
              for e in base.first_segments(batch, 'targets', self.num_samples)]
    if not splits:
      return []
    outputs = lm.generate_continuations(model, tokenizer, [p for p, _ in splits],
                                        max_new_tokens=max_new_tokens,
                                        bidirectional_prompt=self.attention == 'prefix')
    return [dict(input=tokenizer.decode(p[1:-1]), prediction=tokenizer.decode(o),
                 reference=tokenizer.decode(r)) for (p, r), o in zip(splits, outputs)]
