"""BERT masked language modelling (Devlin et al. 2019), masking done on the host.

Stream 'inputs' = `[cls] + text + [sep]` (one BERT "sentence A"; packing puts several in a row,
each with its own segment id). Of the ordinary tokens (never cls/sep/pad/eos/bos/unk/mask or a
sentinel), exactly max(1, round(p * n)) are chosen uniformly without replacement, where
p = data.mlm_probability (BERT's fixed per-sequence budget rather than independent coin flips:
the same 15% on average, with less variance). Each chosen token independently becomes
`[mask]` with probability 0.8, a random ordinary token with 0.1, and stays itself with 0.1.
'inputs_labels' holds the original id at chosen positions and 0 elsewhere; only chosen positions
are scored (ids of ordinary tokens are never 0 = pad, so labels > 0 is the weight).

With full packing the sequence is the row: `finish_row` draws the budget over the ordinary
tokens of all its pieces (as RoBERTa masks its cross-document rows), so no row ever holds more
than `max_predictions` = max(1, round(p * (seq_len - 2))) chosen tokens, as one example never
does. The loss gathers those positions first and projects only them onto the vocabulary
(BERT's max_predictions_per_seq), the same loss at a fraction of the [B, L, V] work.
"""

import jax.numpy as jnp
import numpy as np

from transformer.data import fields as fields_lib
from transformer.objectives import base, losses

MASK_FRACTION = 0.8    # chosen tokens replaced by [mask]
RANDOM_FRACTION = 0.1  # chosen tokens replaced by a random ordinary token (the rest: unchanged)


def max_predictions(probability, seq_len):
  """The most chosen tokens a row of `seq_len` can hold (one example or one packed row)."""
  return max(1, int(round(probability * (seq_len - 2))))


class MaskedLM(base.Objective):
  """BERT MLM over packed `[cls] + text + [sep]` examples."""

  name = 'mlm'
  head = 'lm'
  fields = {'text': fields_lib.TEXT}
  families = ('encoder',)
  tokens = ('cls', 'sep', 'mask')
  min_piece = 1

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.probability = base.data_value(config, 'mlm_probability', 0.0, 1.0)
    self.stream_lengths = {'inputs': self.seq_len}
    self.text_chunk_len = self.seq_len - 2  # room for [cls] and [sep]
    self.num_samples = int(config.log.samples)
    self.special = np.asarray(base.special_ids(tokenizer), np.int32)
    self.ordinary = np.setdiff1d(np.arange(tokenizer.vocab_size, dtype=np.int32), self.special)

  @property
  def max_predictions(self):
    return max_predictions(self.probability, self.seq_len)

  def features(self, example, rng=None):
    """{'inputs': corrupted ids, 'inputs_labels': original id where chosen else 0}."""
    tok = self.tokenizer
    text = np.asarray(example['text'], np.int32)[:self.text_chunk_len]
    return self.mask(base.int32([tok.cls_id, *text.tolist(), tok.sep_id]), rng)

  def mask(self, original, rng=None):
    """{'inputs', 'inputs_labels'} of `original`: the budget drawn over its ordinary tokens."""
    rng = base.as_rng(rng)
    tok = self.tokenizer
    candidates = np.flatnonzero(~np.isin(original, self.special))
    inputs = original.copy()
    labels = np.zeros_like(original)
    if candidates.size:
      count = max(1, int(round(self.probability * candidates.size)))
      chosen = rng.choice(candidates, size=count, replace=False)
      labels[chosen] = original[chosen]
      u = rng.random(count)
      to_mask = chosen[u < MASK_FRACTION]
      to_random = chosen[(u >= MASK_FRACTION) & (u < MASK_FRACTION + RANDOM_FRACTION)]
      inputs[to_mask] = tok.mask_id
      inputs[to_random] = rng.choice(self.ordinary, size=to_random.size)
    return {'inputs': inputs, 'inputs_labels': labels}

  def piece_lengths(self, n, *, first, last, key=None):
    del first, last, key   # every piece is a BERT sequence of its own
    return {'inputs': n + 2}

  def piece(self, tokens, rng=None, *, first, last):
    """`[cls] piece [sep]`, not masked yet (`finish_row` masks the whole row)."""
    del rng, first, last
    tok = self.tokenizer
    inputs = base.int32([tok.cls_id, *np.asarray(tokens).tolist(), tok.sep_id])
    return {'inputs': inputs, 'inputs_labels': np.zeros_like(inputs)}

  def finish_row(self, pieces, rng):
    """The pieces of one stream-packed row, masked with one budget for the row."""
    masked = self.mask(np.concatenate([p['inputs'] for p in pieces]), rng)
    inputs, labels = masked['inputs'], masked['inputs_labels']
    cuts = np.cumsum([len(p['inputs']) for p in pieces])[:-1]
    return [{'inputs': i, 'inputs_labels': l}
            for i, l in zip(np.split(inputs, cuts), np.split(labels, cuts))]

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    """Cross-entropy at the chosen positions, gathered first (at most max_predictions a row)."""
    labels_BL = batch['inputs_labels']
    chosen_BP = jnp.argsort(labels_BL <= 0, axis=1, stable=True)[:, :self.max_predictions]
    logits_BPV = model(batch['inputs'], batch['inputs_segment_ids'], batch['inputs_positions'],
                       deterministic=deterministic, logits_at=chosen_BP)
    labels_BP = jnp.take_along_axis(labels_BL, chosen_BP, axis=1)
    weights_BP = (labels_BP > 0).astype(jnp.float32)
    return losses.cross_entropy(logits_BPV, labels_BP, weights_BP, z_loss=self.z_loss,
                                kernels=self.kernels)

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=0):
    """The masked input, the model's fills at the chosen positions, and the original text."""
    del max_new_tokens  # nothing is generated
    tokenizer = tokenizer or self.tokenizer
    examples = base.first_segments(batch, 'inputs', self.num_samples)
    if not examples:
      return []
    tokens, segs = base.pad_rows([e['tokens'] for e in examples], tokenizer.pad_id)
    positions = np.where(segs > 0, np.arange(tokens.shape[1])[None, :], 0).astype(np.int32)
    logits = model(jnp.asarray(tokens), jnp.asarray(segs), jnp.asarray(positions),
                   deterministic=True)
    guesses = np.asarray(jnp.argmax(logits, axis=-1))
    samples = []
    for i, e in enumerate(examples):
      labels = np.asarray(e['labels'])
      chosen = labels > 0
      shown = np.asarray(e['tokens'])
      filled = np.where(chosen, guesses[i, :len(labels)], shown)
      original = np.where(chosen, labels, shown)
      samples.append(dict(input=tokenizer.decode(shown.tolist()),
                          prediction=tokenizer.decode(filled.tolist()),
                          reference=tokenizer.decode(original.tolist())))
    return samples
