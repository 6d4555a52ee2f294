"""Sequence classification (GLUE-style fine-tuning) for encoder and decoder models.

One example per row, never packed (the label is a per-example scalar and the heads pool one
position). Encoder: 'inputs' = `[cls] + text + [sep]`, pooled at position 0 (BERT). Decoder:
'inputs' = `[bos] + text + [cls]`, pooled at the last non-padding token, so the pooled state has
read the whole text (GPT-1's extract token). Texts longer than data.seq_len are truncated, not
chunked, so each text keeps exactly one label. Loss and accuracy are averaged over examples;
all-padding rows (the tail of an eval set) have weight 0.
"""

import jax.numpy as jnp
import numpy as np

from transformer.data import fields as fields_lib
from transformer.errors import ConfigError
from transformer.objectives import base, losses


class Classification(base.Objective):
  """Cross-entropy on a [B, num_classes] head against the scalar 'label'."""

  name = 'classification'
  head = 'classification'
  fields = {'text': fields_lib.TEXT, 'label': fields_lib.LABEL}
  families = ('encoder', 'decoder')

  @classmethod
  def tokens_needed(cls, family):
    return ('bos', 'cls') if family == 'decoder' else ('cls', 'sep')

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.packable = False
    self.num_classes = int(config.model.num_classes)
    if self.num_classes < 2:
      raise ConfigError(f'`model.num_classes={self.num_classes}`: ; classification '
                        f'needs at least 2, e.g. --config.model.num_classes=2')
    self.stream_lengths = {'inputs': self.seq_len}
    self.num_samples = int(config.log.samples)

  def features(self, example, rng=None):
    del rng  # deterministic
    tok = self.tokenizer
    label = int(example['label'])
    if not 0 <= label < self.num_classes:
      raise ConfigError(f'label {label} is outside [0, {self.num_classes}): set '
                        f'`model.num_classes` to the number of classes of `data.source`')
    text = np.asarray(example['text'], np.int32)[:self.seq_len - 2].tolist()
    if self.family == 'decoder':
      inputs = [tok.bos_id] + text + [tok.cls_id]
    else:
      inputs = [tok.cls_id] + text + [tok.sep_id]
    return {'inputs': base.int32(inputs), 'label': np.int32(label)}

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    logits_BC = model(batch['inputs'], batch['inputs_segment_ids'], batch['inputs_positions'],
                      deterministic=deterministic)
    weights_B = (batch['inputs_segment_ids'][:, 0] > 0).astype(jnp.float32)
    return losses.cross_entropy(logits_BC, batch['label'], weights_B, z_loss=self.z_loss,
                                kernels=self.kernels)

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=0):
    """Text, predicted label and true label for up to `log.samples` examples."""
    del max_new_tokens
    tokenizer = tokenizer or self.tokenizer
    rows = min(self.num_samples, np.shape(batch['inputs'])[0])
    sub = {k: jnp.asarray(np.asarray(batch[k])[:rows])
           for k in ('inputs', 'inputs_segment_ids', 'inputs_positions')}
    logits = model(sub['inputs'], sub['inputs_segment_ids'], sub['inputs_positions'],
                   deterministic=True)
    guesses = np.asarray(jnp.argmax(logits, axis=-1))
    labels = np.asarray(batch['label'])[:rows]
    tokens = np.asarray(batch['inputs'])[:rows]
    segs = np.asarray(batch['inputs_segment_ids'])[:rows]
    return [dict(input=tokenizer.decode(tokens[i][segs[i] > 0][1:-1].tolist()),
                 prediction=str(int(guesses[i])), reference=str(int(labels[i])))
            for i in range(rows) if segs[i, 0] > 0]
