"""The teacher of an objective that learns from one (objective=distillation): loaded once.

  teacher.same_vocabulary(label, tokenizer, teacher_tokenizer, recorded)   # setup.prepare
  teacher.attach(objective, model_config, ckpt_dir, label)

`model_config` is the teacher's config.json `model` (a run's, or an import-hf output's), its
parameters the latest checkpoint in `ckpt_dir`, read like checkpoint.init_from reads another
run's. Refused in one line naming `distill.teacher` (before anything is written): a teacher whose
tokenizer (the one saved beside it) has another vocabulary than the student's, one whose
model.vocab_size or width does not fit the student (the objective's set_teacher), and one whose
checkpoint lacks a parameter of the model its config.json describes.
"""

import dataclasses

import jax
from flax import nnx

from transformer import models
from transformer.errors import ConfigError
from transformer.models.hparams import HParams
from transformer.training import checkpoint


def _build(hp):
  return nnx.split(models.build(hp, head='lm', rngs=nnx.Rngs(params=0, dropout=1)),
                   nnx.Param, ...)


def same_vocabulary(label, tokenizer, teacher_tokenizer, recorded):
  """ConfigError naming `distill.teacher` and the fix when the teacher's tokenizer (loaded from
  `recorded`) has another vocabulary than the student's `tokenizer`."""
  if teacher_tokenizer.vocabulary() != tokenizer.vocabulary():
    raise ConfigError(f'`distill.teacher={label}`: its tokenizer ({recorded}) has another '
                      "vocabulary than the student's, so their logits name different tokens; "
                      f'give the student the teacher\'s: --config.data.tokenizer={recorded}')


def attach(objective, model_config, ckpt_dir, label):
  """Load the teacher and hand it to `objective.set_teacher` (hp, graphdef, params, rest)."""
  try:
    hp = HParams.from_config(model_config)
  except ConfigError as e:
    raise ConfigError(f'`distill.teacher={label}`: its config.json model: {e}') from None
  hp = dataclasses.replace(hp, dropout_rate=0.0, attention_dropout_rate=0.0)
  graphdef, abstract, _ = nnx.eval_shape(lambda: _build(hp))
  wanted = nnx.to_pure_dict(abstract)
  try:
    params, missing, _ = checkpoint.load_pretrained(ckpt_dir, wanted)
  except ConfigError as e:
    raise ConfigError(str(e).replace('checkpoint.init_from',
                                     f'`distill.teacher={label}`')) from None
  if missing:
    raise ConfigError(f'`distill.teacher={label}`: its checkpoint has no {missing[0]} for the '
                      f'model its config.json describes ({len(missing)} missing)')
  # The dropout streams alone: the parameter init inside is dead code XLA drops.
  rest = jax.jit(lambda: nnx.to_pure_dict(_build(hp)[2]))()
  objective.set_teacher(hp, graphdef, params, rest)
