"""DistilBERT's distillation (Sanh et al. 2019): an encoder student learns from a teacher's MLM.

The examples are MLM's (the same masking, objectives/mlm.py). Both models read the same masked
inputs inside the jitted step; the teacher's outputs pass through stop_gradient. The loss is

  alpha_ce  * T^2 KL(softmax(teacher / T) || softmax(student / T))   soft targets at temperature T,
              on every real token (distill.restrict_ce_to_mask: the masked positions only)
  alpha_mlm * the MLM cross-entropy at the masked positions
  alpha_cos * mean(1 - cos(student, teacher last hidden state)) over every real token

as the Hugging Face distillation example computes it (KLDivLoss 'batchmean' x T^2,
CosineEmbeddingLoss). The weights default to the example's DistilBERT command
(examples/research_projects/distillation/README.md in huggingface/transformers:
`--alpha_ce 5.0 --alpha_mlm 2.0 --alpha_cos 1.0`; its train.py defaults T to 2.0).

The metric `loss` is the student's MLM cross-entropy alone, so a distilled run and an `mlm`
run of the same student compare directly; `distill_kl`, `distill_cos` and `distill_total` are
the other terms and the weighted sum that is minimised (evaluation reports them all; the
teacher always runs without dropout). The teacher comes from `distill.teacher` (a run directory
or an import-hf output); the training side loads it (training/teacher.py) and hands it over with
`set_teacher`; with `distill.init_from_teacher` the fresh student starts from `init_student`:
the teacher's embeddings and heads and every other teacher layer (student layer i <- teacher
layer i * (teacher layers // student layers)).
"""

import re

import jax
import jax.numpy as jnp
from flax import nnx

from transformer import models
from transformer.errors import ConfigError
from transformer.objectives import losses, mlm

KEYS = dict(teacher='', temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0,
            restrict_ce_to_mask=False, init_from_teacher=True)
_UNROLLED = re.compile(r'^(.*/layers)/(\d+)/(.*)$')
_STACKED = re.compile(r'^(.*/layers)/([^0-9/][^/]*/.*)$')


def _settings(config):
  """The `distill` section, checked: {key: value} (ConfigError naming the key)."""
  section = config.get('distill')
  if section is None:
    raise ConfigError('`objective=distillation`: the config has no `distill` section; start '
                      'from configs/common.py, which defines distill.teacher and its weights')
  values = {k: section.get(k, v) for k, v in KEYS.items()}
  if not values['temperature'] > 0:
    raise ConfigError(f'`distill.temperature={values["temperature"]!r}`: must be > 0 (the '
                      'paper and Hugging Face use 2.0)')
  for key in ('alpha_ce', 'alpha_mlm', 'alpha_cos'):
    if not values[key] >= 0:
      raise ConfigError(f'`distill.{key}={values[key]!r}`: a loss weight must be >= 0')
  if not values['alpha_ce'] + values['alpha_mlm'] + values['alpha_cos'] > 0:
    raise ConfigError('`distill.alpha_ce=0`, `distill.alpha_mlm=0`, `distill.alpha_cos=0`: '
                      'nothing to learn; give one loss a positive weight')
  if values['init_from_teacher'] and config.checkpoint.init_from:
    raise ConfigError('`distill.init_from_teacher=True` and `checkpoint.init_from`: the student '
                      'starts from one of them; set --config.distill.init_from_teacher=false '
                      'or leave checkpoint.init_from empty')
  return values


def _flat(params):
  return {models.path_name(kp): v for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}


class Distillation(mlm.MaskedLM):
  """MLM examples; the DistilBERT loss against a teacher encoder (see the module docstring)."""

  name = 'distillation'
  families = ('encoder',)
  teacher_key = 'distill.teacher'   # the training side loads the teacher named there

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.settings = _settings(config)
    self.temperature = float(self.settings['temperature'])
    self.alphas = tuple(float(self.settings[k]) for k in ('alpha_ce', 'alpha_mlm', 'alpha_cos'))
    self.student_hp = models.HParams.from_config(config.model)
    self.teacher = None   # (HParams, graphdef, params, other state): set_teacher

  # -- the teacher ---------------------------------------------------------------------------
  def set_teacher(self, hp, graphdef, params, rest):
    """Use the teacher `hp` (an encoder with an MLM head) holding `params` (a pure dict)."""
    where = f'`distill.teacher={self.settings["teacher"]}`'
    if hp.family != 'encoder':
      raise ConfigError(f'{where}: a {hp.family} model; the teacher of a distillation is an '
                        'encoder with an MLM head (a BERT or DistilBERT run or import)')
    if hp.vocab_size != self.student_hp.vocab_size:
      raise ConfigError(f'{where}: its model.vocab_size={hp.vocab_size} differs from the '
                        f"student's model.vocab_size={self.student_hp.vocab_size}; soft targets "
                        'need one vocabulary: give the student the teacher\'s tokenizer '
                        '(--config.data.tokenizer=<teacher>/tokenizer) and model.vocab_size=0')
    if self.alphas[2] and hp.d_model != self.student_hp.d_model:
      raise ConfigError(f'`distill.alpha_cos={self.alphas[2]}`: the cosine loss compares hidden '
                        f'states, and the teacher\'s model.d_model={hp.d_model} differs from the '
                        f"student's {self.student_hp.d_model}; set --config.distill.alpha_cos=0 "
                        'or give the student the teacher\'s width')
    self.teacher = (hp, graphdef, params, rest)

  def init_student(self, student_params):
    """The student's parameters (a pure dict like `student_params`, whose leaves give the dtype
    and sharding) from the teacher: every parameter outside the layers copied, student layer i
    from teacher layer i * stride, stride = teacher layers // student layers."""
    hp_t, _, teacher_params, _ = self.teacher
    hp_s = self.student_hp
    if hp_s.num_layers > hp_t.num_layers:
      raise ConfigError(f'`distill.init_from_teacher=True`: the student has more layers '
                        f'({hp_s.num_layers}) than the teacher ({hp_t.num_layers}); set '
                        '--config.distill.init_from_teacher=false')
    stride = hp_t.num_layers // hp_s.num_layers
    teacher = _flat(teacher_params)

    def layer(stack, rest, i):   # teacher layer i, unrolled or stacked (model.scan_layers)
      if f'{stack}/{i}/{rest}' in teacher:
        return teacher[f'{stack}/{i}/{rest}']
      stacked = teacher.get(f'{stack}/{rest}')
      return None if stacked is None else stacked[i]

    def value(path, shape):
      match = _UNROLLED.match(path)
      if match:
        return layer(match.group(1), match.group(3), int(match.group(2)) * stride)
      match = _STACKED.match(path) if hp_s.scan_layers else None
      if match:
        parts = [layer(match.group(1), match.group(2), j * stride) for j in range(shape[0])]
        return None if any(p is None for p in parts) else jnp.stack(parts)
      return teacher.get(path)

    leaves, treedef = jax.tree_util.tree_flatten_with_path(student_params)
    out = []
    for kp, leaf in leaves:
      path = models.path_name(kp)
      got = value(path, leaf.shape)
      if got is None:
        out.append(leaf)   # nothing like it in the teacher (e.g. a head the teacher lacks)
        continue
      if tuple(got.shape) != tuple(leaf.shape):
        raise ConfigError(f'`distill.init_from_teacher=True`: the student\'s {path} has shape '
                          f'{tuple(leaf.shape)}, the teacher\'s {tuple(got.shape)}; a student '
                          'initialised from its teacher keeps its widths (model.d_model, d_ff, '
                          'num_heads); set --config.distill.init_from_teacher=false')
      sharding = getattr(leaf, 'sharding', None)
      got = jnp.array(got, leaf.dtype, copy=True)   # its own buffer: the step donates the state
      out.append(jax.device_put(got, sharding) if sharding is not None else got)
    return jax.tree_util.tree_unflatten(treedef, out)

  # -- the loss ------------------------------------------------------------------------------
  def frozen(self):
    """The teacher's parameters: an argument of the trainer's steps. Closed over, they were
    constants of the compiled program, which then carried the whole teacher (a BERT-base
    teacher: 440 MB in every lowering, compile and compilation-cache entry)."""
    return {} if self.teacher is None else {'teacher': self.teacher[2]}

  def _teacher_model(self):
    if self.teacher is None:
      raise ConfigError('`objective=distillation`: no teacher loaded; training.setup.prepare '
                        'loads distill.teacher')
    _, graphdef, params, rest = self.teacher
    if self.bound:   # inside a trainer's step: the step's argument
      params = self.bound['teacher']
    return nnx.merge(graphdef, jax.lax.stop_gradient(params), rest)

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    """The weighted DistilBERT loss; metrics: the student's MLM ones plus distill_*."""
    tokens, segs, pos = (batch['inputs'], batch['inputs_segment_ids'],
                         batch['inputs_positions'])
    labels_BL = batch['inputs_labels']
    chosen_BP = jnp.argsort(labels_BL <= 0, axis=1, stable=True)[:, :self.max_predictions]
    teacher = self._teacher_model()
    hidden_s = model.encode(tokens, segs, pos, deterministic=deterministic)
    hidden_t = jax.lax.stop_gradient(teacher.encode(tokens, segs, pos, deterministic=True))
    restrict = self.settings['restrict_ce_to_mask']
    if restrict:   # soft targets at the masked positions only: project those alone
      at = lambda h: jnp.take_along_axis(h, chosen_BP[..., None], axis=1)
      soft_weights = (jnp.take_along_axis(labels_BL, chosen_BP, axis=1) > 0).astype(jnp.float32)
    else:
      at = lambda h: h
      soft_weights = (segs > 0).astype(jnp.float32)
    logits_s = model.mlm_head(at(hidden_s), model.token_embed)
    logits_t = jax.lax.stop_gradient(teacher.mlm_head(at(hidden_t), teacher.token_embed))
    kl_sum = self._soft_targets(logits_s, logits_t, soft_weights)
    cos_sum, real = self._cosine(hidden_s, hidden_t, segs)
    mlm_logits = logits_s if restrict else jnp.take_along_axis(logits_s, chosen_BP[..., None],
                                                                axis=1)
    labels_BP = jnp.take_along_axis(labels_BL, chosen_BP, axis=1)
    mlm_loss, metrics = losses.cross_entropy(
        mlm_logits, labels_BP, (labels_BP > 0).astype(jnp.float32), z_loss=self.z_loss,
        kernels=self.kernels)
    soft_count = jnp.sum(soft_weights)
    a_ce, a_mlm, a_cos = self.alphas
    total = (a_ce * kl_sum / jnp.maximum(soft_count, 1.0) + a_mlm * mlm_loss
             + a_cos * cos_sum / jnp.maximum(real, 1.0))
    count = metrics['loss'][1]
    metrics = dict(metrics, distill_kl=(kl_sum, soft_count), distill_cos=(cos_sum, real),
                   distill_total=(total * count, count))
    return total, metrics

  def _soft_targets(self, logits_s, logits_t, weights):
    """Sum over weighted positions of T^2 KL(teacher || student) at temperature T."""
    t = self.temperature
    log_s = jax.nn.log_softmax(logits_s.astype(jnp.float32) / t, axis=-1)
    log_t = jax.nn.log_softmax(logits_t.astype(jnp.float32) / t, axis=-1)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)
    return jnp.sum(jnp.where(weights > 0, kl * weights, 0.0)) * t * t

  @staticmethod
  def _cosine(hidden_s, hidden_t, segs):
    """(sum over real tokens of 1 - cos(student, teacher), number of real tokens)."""
    s, t = hidden_s.astype(jnp.float32), hidden_t.astype(jnp.float32)
    norms = jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1)
    cos = jnp.sum(s * t, axis=-1) / jnp.maximum(norms, 1e-8)
    real = segs > 0
    return jnp.sum(jnp.where(real, 1.0 - cos, 0.0)), jnp.sum(real).astype(jnp.float32)
