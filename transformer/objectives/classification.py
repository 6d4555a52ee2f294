"""Sequence classification and regression (GLUE-style fine-tuning) for encoder and decoder models.

One example per row, never packed (the label is a per-example scalar and the heads pool one
position). Encoder: 'inputs' = `[cls] + text + [sep]`, or for a sentence pair `[cls] + text +
[sep] + text_pair + [sep]` (BERT), pooled at position 0; with token-type embeddings
(model.type_vocab_size > 0) 'inputs_token_types' is 0 up to the first [sep] and 1 after it.
Decoder: 'inputs' = `[bos] + text + [cls]`, or `[bos] + text + [sep] + text_pair + [cls]`,
pooled at the last non-padding token, so the pooled state has read the whole text (GPT-1's
extract token, and its delimiter between the two texts). Texts longer than data.seq_len are
truncated, not chunked, so each text keeps exactly one label; a pair is cut as Hugging Face's
tokenizers cut one ('longest_first': the shorter text is kept whole when it fits in half the
room, otherwise both get half, the extra token to the longer).

A pair is read when `data.text_pair_key` names the second field or the source is a GLUE pair
task (data/glue.py); the objective then declares the field 'text_pair' (data/fields.py), so a
source without it is refused in one line naming the key (and, for jsonl, the file and line).

model.num_classes >= 2: cross-entropy on a [B, num_classes] head against the class id 'label'.
model.num_classes = 1: regression (STS-B), as Hugging Face's num_labels=1: mean squared error of
the one-unit head against a real-valued 'label' (kind fields.SCORE), for either family.

Loss and accuracy are averaged over examples; all-padding rows (the tail of an eval set) have
weight 0. At eval the objective also hands out every example's prediction (`gathered`), and the
corpus-level scores of the whole eval set are computed once from them (`corpus_scores`: F1 and
Matthews correlation for classes, Pearson and Spearman for regression; objectives/metrics.py).
"""

import jax.numpy as jnp
import numpy as np

from transformer.data import fields as fields_lib
from transformer.data import glue
from transformer.errors import ConfigError
from transformer.objectives import base, losses, metrics


def is_pair(config):
  """Whether `config` reads sentence pairs: data.text_pair_key set, or a GLUE pair source."""
  task = glue.by_source(config.data.source)
  return bool(config.data.get('text_pair_key', '')) or bool(task and task.text_pair)


def longest_first(n1, n2, room):
  """(kept n1, kept n2) with n1 + n2 <= room, cut as Hugging Face tokenizers' 'longest_first'."""
  if n1 + n2 <= room:
    return n1, n2
  if min(n1, n2) <= room // 2:
    return (n1, room - n1) if n1 <= n2 else (room - n2, n2)
  small, large = room // 2, room - room // 2
  return (large, small) if n1 > n2 else (small, large)


class Classification(base.Objective):
  """Cross-entropy (or, with one class, squared error) on the head against the scalar 'label'."""

  name = 'classification'
  head = 'classification'
  fields = {'text': fields_lib.TEXT, 'label': fields_lib.LABEL}
  families = ('encoder', 'decoder')
  gathered = ('prediction', 'label', 'weight')

  @classmethod
  def tokens_needed(cls, family):
    return ('bos', 'cls') if family == 'decoder' else ('cls', 'sep')

  @classmethod
  def fields_for(cls, config):
    """The declaration for `config`: 'text_pair' for pairs, a score 'label' for regression."""
    out = {'text': fields_lib.TEXT}
    if is_pair(config):
      out['text_pair'] = fields_lib.TEXT
    out['label'] = fields_lib.SCORE if int(config.model.num_classes) == 1 else fields_lib.LABEL
    return out

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.packable = False
    self.num_classes = int(config.model.num_classes)
    if self.num_classes < 1:
      raise ConfigError(f'`model.num_classes={self.num_classes}`: classification needs at '
                        'least 2 classes (1: regression), e.g. --config.model.num_classes=2')
    self.fields = self.fields_for(config)
    self.example_fields = tuple(self.fields)
    self.pair = 'text_pair' in self.fields
    if self.pair and self.family == 'decoder' and tokenizer.sep_id is None:
      raise ConfigError('`data.text_pair_key`: a decoder reads a pair as [bos] text [sep] '
                        'text_pair [cls], and this tokenizer has no sep token; use one that has')
    self.token_types = self.family == 'encoder' and int(config.model.type_vocab_size) > 0
    self.regression = self.num_classes == 1
    self.gathered_metrics = metrics.classification_names(self.num_classes)
    self.stream_lengths = {'inputs': self.seq_len}
    self.num_samples = int(config.log.samples)

  def _label(self, value):
    if self.regression:
      return np.float32(value)
    label = int(value)
    if not 0 <= label < self.num_classes:
      raise ConfigError(f'label {label} is outside [0, {self.num_classes}): set '
                        f'`model.num_classes` to the number of classes of `data.source`')
    return np.int32(label)

  def features(self, example, rng=None):
    del rng  # deterministic
    tok = self.tokenizer
    first = np.asarray(example['text'], np.int32).tolist()
    second = np.asarray(example['text_pair'], np.int32).tolist() if self.pair else None
    open_id, sep_id, close_id = ((tok.bos_id, tok.sep_id, tok.cls_id) if self.family == 'decoder'
                                 else (tok.cls_id, tok.sep_id, tok.sep_id))
    if second is None:
      inputs, types = [open_id] + first[:self.seq_len - 2] + [close_id], []
    else:
      n1, n2 = longest_first(len(first), len(second), self.seq_len - 3)
      head = [open_id] + first[:n1] + [sep_id]
      inputs, types = head + second[:n2] + [close_id], [0] * len(head) + [1] * (n2 + 1)
    out = {'inputs': base.int32(inputs), 'label': self._label(example['label'])}
    if self.token_types:
      out['inputs_token_types'] = base.int32(types or [0] * len(inputs))
    return out

  def _logits(self, model, batch, deterministic):
    args = (batch['inputs'], batch['inputs_segment_ids'], batch['inputs_positions'])
    if self.token_types:
      args += (batch['inputs_token_types'],)
    return model(*args, deterministic=deterministic)

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    logits_BC = self._logits(model, batch, deterministic)
    weights_B = (batch['inputs_segment_ids'][:, 0] > 0).astype(jnp.float32)
    if self.regression:
      return losses.squared_error(logits_BC[:, 0], batch['label'], weights_B)
    return losses.cross_entropy(logits_BC, batch['label'], weights_B, z_loss=self.z_loss,
                                kernels=self.kernels)

  def eval_metrics(self, model, batch):
    """The loss and accuracy of the batch, and each example's prediction, label and weight
    ([B] arrays under `gathered`), from which `corpus_scores` scores the whole eval set."""
    logits_BC = self._logits(model, batch, True)
    weights_B = (batch['inputs_segment_ids'][:, 0] > 0).astype(jnp.float32)
    if self.regression:
      _, out = losses.squared_error(logits_BC[:, 0], batch['label'], weights_B)
      prediction = logits_BC[:, 0]
    else:
      _, out = losses.cross_entropy(logits_BC, batch['label'], weights_B, z_loss=self.z_loss,
                                    kernels=self.kernels)
      prediction = jnp.argmax(logits_BC, axis=-1)
    return {**out, 'prediction': prediction, 'label': batch['label'], 'weight': weights_B}

  def corpus_scores(self, gathered):
    """{name: score} over the whole eval set, from the concatenated `gathered` arrays."""
    keep = np.asarray(gathered['weight']) > 0
    return metrics.classification_scores(self.gathered_metrics, np.asarray(gathered['prediction'])[keep],
                                         np.asarray(gathered['label'])[keep])

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=0):
    """Text, predicted label (a number for regression) and true label for up to `log.samples`
    examples."""
    del max_new_tokens
    tokenizer = tokenizer or self.tokenizer
    rows = min(self.num_samples, np.shape(batch['inputs'])[0])
    sub = {k: jnp.asarray(np.asarray(v)[:rows]) for k, v in batch.items() if k != 'label'}
    logits = np.asarray(self._logits(model, sub, True))
    shown = (lambda v: f'{float(v):.3f}') if self.regression else (lambda v: str(int(v)))
    guesses = logits[:, 0] if self.regression else logits.argmax(-1)
    labels = np.asarray(batch['label'])[:rows]
    tokens = np.asarray(batch['inputs'])[:rows]
    segs = np.asarray(batch['inputs_segment_ids'])[:rows]
    return [dict(input=tokenizer.decode(tokens[i][segs[i] > 0][1:-1].tolist()),
                 prediction=shown(guesses[i]), reference=shown(labels[i]))
            for i in range(rows) if segs[i, 0] > 0]
