"""Sequence-to-sequence on (inputs, targets) pairs: translation, summarisation, code -> docstring.

Encoder-decoder family: 'inputs' = source + [eos] (encoder), 'targets' = target + [eos]
(decoder). The decoder reads the targets shifted right by one inside each packed segment
(model.decoder_start_id at each segment start, as generation starts), built in the jitted loss
from targets + targets_segment_ids; every target token is scored.

Decoder family: one stream, a prefix LM over `[bos] + source + [sep] + target + [eos]` with
'targets_prefix' = 1 on `[bos] + source + [sep]` (bidirectional); only the target tokens and its
EOS are scored (see lm.decoder_lm_loss). When a pair is longer than data.seq_len, the target
keeps at least half the budget and the source is cut first; with data.targets_len > 0 the cut is
the encoder-decoder's instead (target to targets_len - 1 tokens + EOS, source to
seq_len - targets_len - 2 + [bos] and [sep]), so a decoder with seq_len = I + T + 1 and an
encoder-decoder with seq_len I and targets_len T read and score exactly the same tokens (a
targets_len leaving the source fewer than 1 token keeps the budget split).
"""

import numpy as np

from transformer.data import fields as fields_lib
from transformer.objectives import base, lm, losses, metrics


def encoder_decoder_loss(model, batch, *, deterministic, z_loss=0.0, start_id=0,
                         kernels='tuned', byte_table=None):
  """Teacher-forced cross-entropy on 'targets' of an encoder-decoder model whose decoder starts
  every segment from `start_id` (model.decoder_start_id); with `byte_table`, bits per byte."""
  targets_BT = batch['targets']
  segs_BT = batch['targets_segment_ids']
  decoder_inputs_BT = losses.shift_right_in_segments(targets_BT, segs_BT, start_id)
  logits_BTV = model(batch['inputs'], decoder_inputs_BT,
                     inputs_segment_ids=batch['inputs_segment_ids'],
                     inputs_positions=batch['inputs_positions'],
                     decoder_segment_ids=segs_BT,
                     decoder_positions=batch['targets_positions'],
                     deterministic=deterministic)
  weights_BT = (segs_BT > 0).astype(np.float32)
  return losses.cross_entropy(
      logits_BTV, targets_BT, weights_BT, z_loss=z_loss, kernels=kernels,
      label_bytes=losses.label_bytes(byte_table, targets_BT, decoder_inputs_BT))


def predict_encoder_decoder(model, batch, tokenizer, *, rows, max_new_tokens, spec=None,
                            limit=None, first_index=0):
  """Outputs vs the reference targets: for the first example of up to `rows` rows, or with
  `limit` for every example of the batch up to `limit` (inputs padded to the stream length,
  as many per call as the batch has rows). At most model.max_len new tokens with learned
  positions; never an id past tokenizer.vocab_size; example k samples as input
  `first_index + k`."""
  from transformer.models import decoding  # pylint: disable=import-outside-toplevel  (tests fake it)
  room = lm.position_room(model, 0)
  max_new_tokens = max_new_tokens if room is None else min(max_new_tokens, room)
  if limit is None:
    sources = base.first_segments(batch, 'inputs', rows)
    references = base.first_segments(batch, 'targets', rows)
    width = chunk = None
  else:
    sources = base.examples(batch, 'inputs', limit)
    references = base.examples(batch, 'targets', limit)
    width, chunk = np.shape(batch['inputs'])[1], np.shape(batch['inputs'])[0]
  if not sources:
    return []

  def run(tokens, segs, index):
    return decoding.generate_seq2seq(model, tokens, segs, max_new_tokens=max_new_tokens,
                                     eos_id=tokenizer.eos_id, spec=spec,
                                     vocab_limit=tokenizer.vocab_size, index=index)
  outputs = base.decode_rows([s['tokens'] for s in sources], run, pad_id=tokenizer.pad_id,
                             width=width, chunk=chunk,
                             index=range(first_index, first_index + len(sources)))
  return [dict(input=tokenizer.decode(s['tokens']),
               prediction=tokenizer.decode(base.until_eos(o, tokenizer.eos_id)),
               reference=tokenizer.decode(r['tokens']))
          for s, r, o in zip(sources, references, outputs)]


def split_budget(source_len, target_len, budget):
  """(kept source length, kept target length) with their sum at most `budget`."""
  if source_len + target_len <= budget:
    return source_len, target_len
  keep_target = min(target_len, max(budget - source_len, budget // 2))
  return min(source_len, budget - keep_target), keep_target


class Seq2Seq(base.Objective):
  """Pairs: encoder-decoder translation, or a decoder-only prefix LM over source + sep + target."""

  name = 'seq2seq'
  head = 'lm'
  fields = {'inputs': fields_lib.TEXT, 'targets': fields_lib.TEXT}
  families = ('encoder_decoder', 'decoder')

  @classmethod
  def tokens_needed(cls, family):
    return ('bos', 'sep', 'eos') if family == 'decoder' else ('eos',)

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    if self.family == 'decoder':
      self.stream_lengths = {'targets': self.seq_len}
    else:
      self.stream_lengths = {'inputs': self.seq_len, 'targets': self.targets_len}
    # decoder: the encoder-decoder's truncation (module docstring) when targets_len is given
    # and leaves the source room; a targets_len as long as the stream (a family config's
    # default, e.g. GPT-2 tiny's 32 of 32) keeps the budget split, as before the matched cut
    self.matched_cut = (self.family == 'decoder' and int(config.data.targets_len) > 0
                        and self.seq_len - self.targets_len >= 3)
    self.num_samples = int(config.log.samples)
    decode = config.log.get('decode') or {}
    self.corpus_metrics = metrics.metric_names(decode.get('metrics', 'auto'), config.data.source)

  def features(self, example, rng=None):
    del rng  # deterministic
    tok = self.tokenizer
    source = np.asarray(example['inputs'], np.int32).tolist()
    target = np.asarray(example['targets'], np.int32).tolist()
    if self.family != 'decoder':
      return {'inputs': base.int32(source[:self.seq_len - 1] + [tok.eos_id]),
              'targets': base.int32(target[:self.targets_len - 1] + [tok.eos_id])}
    if self.matched_cut:
      n_tgt = min(len(target), self.targets_len - 1)
      n_src = min(len(source), self.seq_len - self.targets_len - 2)
    else:
      n_src, n_tgt = split_budget(len(source), len(target), self.seq_len - 3)
    prompt = [tok.bos_id] + source[:n_src] + [tok.sep_id]
    targets = base.int32(prompt + target[:n_tgt] + [tok.eos_id])
    prefix = np.zeros_like(targets)
    prefix[:len(prompt)] = 1
    return {'targets': targets, 'targets_prefix': prefix}

  def generation_prompt(self, ids):
    """The source as in training: source + [eos] for the encoder, or the decoder-only prompt
    [bos] + source + [sep], read bidirectionally."""
    tok = self.tokenizer
    if self.family == 'decoder':
      return [tok.bos_id, *ids, tok.sep_id], True
    return [*ids, tok.eos_id], False

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    if self.family == 'decoder':
      return lm.decoder_lm_loss(model, batch, deterministic=deterministic, use_prefix=True,
                                z_loss=self.z_loss, kernels=self.kernels,
                                byte_table=self.byte_table)
    return encoder_decoder_loss(model, batch, deterministic=deterministic, z_loss=self.z_loss,
                                start_id=self.decoder_start_id, kernels=self.kernels,
                                byte_table=self.byte_table)

  def score(self, samples):
    """Corpus scores (0-100) of `predict` samples against their references: 'bleu'
    (sacrebleu) and, for summarisation-style data, 'rouge1', 'rouge2', 'rougeL'."""
    return metrics.score(self.corpus_metrics, samples)

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=32, spec=None, limit=None,
              first_index=0):
    """Outputs (greedy unless `spec` says otherwise) vs references: for up to `log.samples`
    eval rows, or with `limit` for every example of the batch up to `limit` (example k samples
    as example `first_index + k` of the eval set)."""
    tokenizer = tokenizer or self.tokenizer
    if self.family != 'decoder':
      return predict_encoder_decoder(model, batch, tokenizer, rows=self.num_samples,
                                     max_new_tokens=max_new_tokens, spec=spec, limit=limit,
                                     first_index=first_index)
    if limit is None:
      examples = base.first_segments(batch, 'targets', self.num_samples)
      width = chunk = None
    else:
      examples = base.examples(batch, 'targets', limit)
      width, chunk = np.shape(batch['targets'])[1], np.shape(batch['targets'])[0]
    if not examples:
      return []
    splits = []
    for e in examples:
      k = max(1, sum(e['prefix']))
      splits.append((e['tokens'][:k], e['tokens'][k:]))
    outputs = lm.generate_continuations(model, tokenizer, [p for p, _ in splits],
                                        max_new_tokens=max_new_tokens, bidirectional_prompt=True,
                                        spec=spec, width=width, chunk=chunk,
                                        first_index=first_index)
    return [dict(input=tokenizer.decode(p[1:-1]), prediction=tokenizer.decode(o),
                 reference=tokenizer.decode(r)) for (p, r), o in zip(splits, outputs)]
