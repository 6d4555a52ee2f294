"""Decoder-only language modelling: causal LM (GPT) and prefix LM (T5's decoder-only variant).

Layout (one stream, 'targets'): every example is `[bos] + text + [eos]`, and the model predicts
the NEXT token inside the same array: logits at position i are scored against token i+1 when
both are in the same packed segment. Nothing is shifted on the host, so packing, positions and
segment ids stay exactly as the data pipeline made them; the leading BOS means the first text
token is predicted too and that generation can start from `[bos]` alone. No loss crosses a
segment boundary and padding (segment id 0) is never scored.

Prefix LM adds 'targets_prefix' (1 on `[bos]` + the first round(prefix_fraction * n) text
tokens, clipped so that at least one text token is on each side). The model is called with
`prefix=` so those tokens see each other bidirectionally, and only predictions of tokens outside
the prefix are scored (the last prefix token predicting the first target token counts).
"""

import jax.numpy as jnp
import numpy as np

from transformer.data import fields as fields_lib
from transformer.objectives import base, losses


def decoder_lm_loss(model, batch, *, deterministic, use_prefix, prefix_attention=True,
                    z_loss=0.0, kernels='tuned', byte_table=None):
  """Next-token cross-entropy over the 'targets' stream of a decoder-only model.

  Shared by causal LM, prefix LM, decoder-only seq2seq and span corruption. With `use_prefix`,
  positions whose label lies in batch['targets_prefix'] get weight 0, and (unless
  `prefix_attention` is False: the prefix read causally) the model gets `prefix=` so the prefix
  attends to itself bidirectionally. With `byte_table` (Objective.byte_table) the metrics
  include bits per byte of the scored tokens.
  """
  tokens_BL = batch['targets']
  segs_BL = batch['targets_segment_ids']
  kwargs = {}
  if use_prefix and prefix_attention:
    kwargs['prefix'] = batch['targets_prefix']
  logits_BLV = model(tokens_BL, segs_BL, batch['targets_positions'],
                     deterministic=deterministic, **kwargs)
  labels_BL = losses.next_token_labels(tokens_BL)
  weights_BL = losses.next_token_weights(segs_BL)
  if use_prefix:
    label_in_prefix = losses.next_token_labels(batch['targets_prefix'])
    weights_BL = weights_BL * (1 - label_in_prefix).astype(jnp.float32)
  return losses.cross_entropy(logits_BLV, labels_BL, weights_BL, z_loss=z_loss, kernels=kernels,
                              label_bytes=losses.label_bytes(byte_table, labels_BL, tokens_BL))


def position_room(model, prompt_len):
  """How many tokens may follow `prompt_len` tokens inside the model's learned position table
  (model.max_len rows; `decoding.generate` refuses more); None when there is no table."""
  hp = getattr(model, 'hp', None)
  return hp.max_len - prompt_len if hp is not None and hp.positions == 'learned' else None


def generate_continuations(model, tokenizer, prompts, *, max_new_tokens, bidirectional_prompt,
                           spec=None, width=None, chunk=None, first_index=0):
  """Continuations (id lists, without the EOS) of each prompt (an id list) by
  transformer.models.decoding.generate with `spec` (default greedy).

  Without `width`, prompts of equal length run as one batch; with it, every prompt runs
  right-padded to `width` tokens, `chunk` rows per call, so one compiled program serves them
  all. With `bidirectional_prompt` the prompt attends to itself bidirectionally, as the prefix
  did in training (`prefix_lm=True`). With learned positions a continuation stops at the end of
  the table (model.max_len). Ids past tokenizer.vocab_size are never chosen; prompt k draws
  its sampling noise as input `first_index + k` of the request.
  """
  from transformer.models import decoding  # pylint: disable=import-outside-toplevel  (tests fake it)
  outputs = [[] for _ in prompts]
  groups = {}
  for i, p in enumerate(prompts):
    room = position_room(model, len(p))
    if room is None or room > 0:   # a prompt that fills the position table gets nothing
      groups.setdefault(width or len(p), []).append(i)

  def run(tokens, segs, index):
    return decoding.generate(model, tokens, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                             prefix_lm=bidirectional_prompt, segment_ids=segs, spec=spec,
                             stop_at_table_end=True, vocab_limit=tokenizer.vocab_size,
                             index=index)
  for group_width, rows in groups.items():
    got = base.decode_rows([prompts[i] for i in rows], run, pad_id=tokenizer.pad_id,
                           width=group_width, chunk=chunk, index=[first_index + i for i in rows])
    for i, ids in zip(rows, got):
      room = position_room(model, len(prompts[i]))
      outputs[i] = base.until_eos(ids[:max_new_tokens if room is None else room],
                                  tokenizer.eos_id)
  return outputs


class CausalLM(base.Objective):
  """GPT-style next-token prediction over packed `[bos] + text + [eos]` examples."""

  name = 'causal_lm'
  head = 'lm'
  fields = {'text': fields_lib.TEXT}
  families = ('decoder',)
  tokens = ('bos', 'eos')
  min_piece = 2    # a piece predicts at least one of its tokens

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.stream_lengths = {'targets': self.seq_len}
    self.text_chunk_len = self.seq_len - 2  # room for BOS and EOS
    self.num_samples = int(config.log.samples)

  def features(self, example, rng=None):
    del rng  # deterministic
    text = np.asarray(example['text'], np.int32)[:self.text_chunk_len]
    tok = self.tokenizer
    return {'targets': base.int32([tok.bos_id, *text.tolist(), tok.eos_id])}

  def piece_lengths(self, n, *, first, last, key=None):
    del key   # deterministic
    return {'targets': n + int(first) + int(last)}

  def _piece_targets(self, tokens, first, last):
    tok = self.tokenizer
    return base.int32([tok.bos_id] * first + np.asarray(tokens).tolist() + [tok.eos_id] * last)

  def piece(self, tokens, rng=None, *, first, last):
    """A piece of a document: [bos] only at its start, [eos] only at its end."""
    del rng  # deterministic
    return {'targets': self._piece_targets(tokens, first, last)}

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    return decoder_lm_loss(model, batch, deterministic=deterministic, use_prefix=False,
                           z_loss=self.z_loss, kernels=self.kernels, byte_table=self.byte_table)

  def generation_prompt(self, ids):
    """[bos] + text, continued causally (prefix LM: read bidirectionally, as its prefix was)."""
    return [self.tokenizer.bos_id, *ids], self.name != 'causal_lm'

  def _prompt_split(self, example):
    """(prompt ids, reference ids): the first half of the example and the rest."""
    tokens = example['tokens']
    half = max(1, len(tokens) // 2)
    return tokens[:half], tokens[half:]

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=32):
    """Greedy continuation of the first half of up to `log.samples` eval examples."""
    tokenizer = tokenizer or self.tokenizer
    examples = base.first_segments(batch, 'targets', self.num_samples)
    splits = [self._prompt_split(e) for e in examples]
    if not splits:
      return []
    outputs = generate_continuations(
        model, tokenizer, [p for p, _ in splits], max_new_tokens=max_new_tokens,
        bidirectional_prompt=self.name != 'causal_lm')
    return [dict(input=tokenizer.decode(p), prediction=tokenizer.decode(o),
                 reference=tokenizer.decode(r)) for (p, r), o in zip(splits, outputs)]


class PrefixLM(CausalLM):
  """Prefix LM: a bidirectional prefix, then next-token prediction on the rest only."""

  name = 'prefix_lm'

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.prefix_fraction = base.data_value(config, 'prefix_fraction', 0.0, 1.0)

  def _prefix_len(self, n):
    """Text tokens in the prefix of n: round(prefix_fraction * n), clipped to 1..n-1."""
    k = int(round(self.prefix_fraction * n))
    return min(max(k, 1), n - 1) if n >= 2 else 0

  def features(self, example, rng=None):
    del rng  # the split point is a fixed fraction of each example
    text = np.asarray(example['text'], np.int32)[:self.text_chunk_len]
    k = self._prefix_len(len(text))
    tok = self.tokenizer
    targets = base.int32([tok.bos_id, *text.tolist(), tok.eos_id])
    prefix = np.zeros_like(targets)
    prefix[:1 + k] = 1
    return {'targets': targets, 'targets_prefix': prefix}

  def piece(self, tokens, rng=None, *, first, last):
    """A piece of a document, its prefix taken from the piece ([bos] and the first
    round(prefix_fraction * n) text tokens)."""
    del rng  # deterministic
    targets = self._piece_targets(tokens, first, last)
    prefix = np.zeros_like(targets)
    prefix[:int(first) + self._prefix_len(len(tokens))] = 1
    return {'targets': targets, 'targets_prefix': prefix}

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    return decoder_lm_loss(model, batch, deterministic=deterministic, use_prefix=True,
                           z_loss=self.z_loss, kernels=self.kernels, byte_table=self.byte_table)

  def _prompt_split(self, example):
    """The prefix is the prompt; the non-prefix tokens are the reference."""
    k = max(1, sum(example['prefix']))
    return example['tokens'][:k], example['tokens'][k:]
