"""Output heads: LM (tied or untied), masked-LM (BERT transform + tied decoder), classification.

Under muP (model.mup_base_width) the LM and class logits are multiplied by 1 / width ratio
(`HParams.output_multiplier`, applied to the head's input so a logits bias stays as it is), and
the heads' d_model x d_model transforms are hidden matrices (`HParams.hidden_std`). A tied
embedding stays tied: as an input weight it keeps its init and learning rate (muP's vector-like
weights), and the readout multiplier makes the tied logits muP's.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.models import layers
from transformer.models.hparams import HParams


class LMHead(nnx.Module):
  """Vocabulary logits: the token embedding transposed (tied) or an untied 'kernel' [embed, vocab],
  float32, soft-capped (cap * tanh(logits / cap)) when hp.logit_softcap > 0."""

  def __init__(self, hp: HParams, *, rngs: nnx.Rngs):
    self.tied, self.d_model = hp.tie_embeddings, hp.d_model
    self.scale_tied_logits = hp.scale_tied_logits
    self.logit_softcap = hp.logit_softcap
    self.output_multiplier = hp.output_multiplier   # muP: 1 / width ratio; else 1
    self.kernel = None if hp.tie_embeddings else layers.Dense(
        (hp.d_model,), (hp.vocab_size,), ('embed', 'vocab'), use_bias=False,
        init_std=hp.std(None), dtype=hp.compute_dtype, param_dtype=hp.params_dtype,
        kernels=hp.kernels, rngs=rngs)
    self.bias = (layers.logical_param(jnp.zeros((hp.vocab_size,), hp.params_dtype), ('vocab',))
                 if hp.lm_head_bias else None)

  def __call__(self, x_BLD, embed: layers.Embed):
    return layers.softcap(self._logits(x_BLD, embed), self.logit_softcap)

  def _logits(self, x_BLD, embed):
    if self.output_multiplier != 1.0:
      x_BLD = x_BLD * self.output_multiplier
    if self.tied:
      if self.scale_tied_logits:
        x_BLD = x_BLD * self.d_model ** -0.5
      if self.bias is not None:   # float32 logits + bias (kernels.biased_tied_logits)
        return embed.attend(x_BLD, self.bias.value)
      logits = embed.attend(x_BLD)
    else:
      logits = self.kernel(x_BLD)
    logits = logits.astype(jnp.float32)
    if self.bias is not None:
      logits = logits + self.bias.value.astype(jnp.float32)
    return logits


class MLMHead(nnx.Module):
  """BERT's masked-LM head: dense + activation + norm ('transform'), then LM logits."""

  def __init__(self, hp: HParams, *, rngs: nnx.Rngs):
    self.transform = nnx.data(None)
    if hp.mlm_transform:
      self.transform = layers.Dense((hp.d_model,), (hp.d_model,), ('embed', 'mlp'),
                                    use_bias=True, init_std=hp.hidden_std(),
                                    dtype=hp.compute_dtype,
                                    param_dtype=hp.params_dtype, kernels=hp.kernels, rngs=rngs)
      self.transform_norm = layers.LayerNorm(hp.d_model, kind=hp.norm, eps=hp.norm_eps,
                                             dtype=hp.compute_dtype, param_dtype=hp.params_dtype)
      self.act = layers.activation_function(hp.activation, hp.kernels)
    self.lm = LMHead(hp, rngs=rngs)

  def __call__(self, x_BLD, embed: layers.Embed):
    if self.transform is not None:
      x_BLD = self.transform_norm(self.act(self.transform(x_BLD)))
    return self.lm(x_BLD, embed)


POOLER_ACTIVATIONS = {'tanh': jnp.tanh, 'relu': jax.nn.relu}


class ClassificationHead(nnx.Module):
  """Optional pooler on one pooled vector (BERT's dense + tanh, DistilBERT's pre_classifier +
  ReLU), dropout, then a linear classifier."""

  def __init__(self, hp: HParams, *, rngs: nnx.Rngs):
    dense = dict(use_bias=True, init_std=hp.std(0.02), dtype=hp.compute_dtype,
                 param_dtype=hp.params_dtype, kernels=hp.kernels, rngs=rngs)
    self.pooler = (layers.Dense((hp.d_model,), (hp.d_model,), ('embed', 'mlp'),
                                **{**dense, 'init_std': hp.std(0.02) * hp.mup_ratio ** -0.5})
                   if hp.classifier_pooler else None)
    self.output_multiplier = hp.output_multiplier
    self.pooler_act = POOLER_ACTIVATIONS[hp.pooler_activation]
    self.dropout = nnx.Dropout(hp.dropout_rate, rngs=rngs)
    self.classifier = layers.Dense((hp.d_model,), (hp.num_classes,), ('embed', 'classes'),
                                   **{**dense, 'use_bias': hp.classifier_bias})

  def __call__(self, pooled_BD, *, deterministic=True):
    if self.pooler is not None:
      pooled_BD = self.pooler_act(self.pooler(pooled_BD))
    pooled_BD = self.dropout(pooled_BD, deterministic=deterministic)
    return self.classifier(pooled_BD * self.output_multiplier).astype(jnp.float32)
