"""Training objectives: each owns the batch-to-loss logic of one task (see base.py for the API).

  obj = transformer.objectives.get(config, tokenizer)
  model = transformer.models.build(config.model, head=obj.head, rngs=...)
  loss, metrics = obj.loss_and_metrics(model, batch, deterministic=False)

Which objective runs on which model family:

  mlm              encoder           BERT masking, loss on the chosen 15%
  causal_lm        decoder           next-token prediction, packed
  prefix_lm        decoder           bidirectional prefix, loss on the rest
  span_corruption  encoder_decoder   T5 sentinel denoising
                   decoder           one stream, inputs [sep] targets, loss on the targets
                                     (data.denoise_attention: prefix | causal over the inputs)
  ul2              encoder_decoder   UL2's mixture of denoisers (R, X spans; S prefix LM), one
                   decoder           per example, its mode token [R] [X] [S] first
  seq2seq          encoder_decoder   source -> target
                   decoder           prefix LM over source + <sep> + target, loss on the target
  classification   encoder, decoder  one label per text or sentence pair (1 class: regression)
  image_classification  encoder (an image model: model.patch_size > 0)  one label per image
  distillation     encoder           mlm's examples, DistilBERT's loss against distill.teacher
"""

from transformer.data import fields
from transformer.data import special_tokens
from transformer.errors import ConfigError
from transformer.objectives.base import Objective
from transformer.objectives.classification import Classification
from transformer.objectives.image_classification import ImageClassification
from transformer.objectives.distillation import Distillation
from transformer.objectives.lm import CausalLM
from transformer.objectives.lm import PrefixLM
from transformer.objectives.mlm import MaskedLM
from transformer.objectives.seq2seq import Seq2Seq
from transformer.objectives.span_corruption import SpanCorruption
from transformer.objectives.ul2 import UL2

REGISTRY = {cls.name: cls for cls in (MaskedLM, CausalLM, PrefixLM, SpanCorruption, Seq2Seq,
                                      Classification, UL2, Distillation, ImageClassification)}


def objectives_for(family):
  """Names of the objectives that work with model family `family`."""
  return [name for name, cls in REGISTRY.items() if family in cls.families]


def declared_fields(name, config=None):
  """{field: kind} the objective `name` declares (data/fields.py), under `config` when given
  (`fields_for`: e.g. a sentence pair's 'text_pair'); an unknown name, which `get` refuses,
  reads text."""
  cls = REGISTRY.get(name)
  if cls is None:
    return {'text': fields.TEXT}
  return fields.as_kinds(cls.fields_for(config)) if config is not None else fields.declared(cls)


def reads_text(name):
  """Whether objective `name` tokenizes a field: only then is there a tokenizer and a
  vocabulary (data.vocab_size, model.vocab_size)."""
  return fields.reads_text(declared_fields(name))


def check_config(config):
  """The objective's own config keys checked (objective.check_config), before anything runs."""
  cls = REGISTRY.get(config.objective)
  if cls is not None:
    cls.check_config(config)


def get(config, tokenizer):
  """The objective named by `config.objective`, checked against `config.model.family`."""
  name = config.objective
  family = config.model.family
  if name not in REGISTRY:
    raise ConfigError(f'`objective={name!r}`: unknown; choose one of '
                      f'{", ".join(REGISTRY)}')
  cls = REGISTRY[name]
  if family not in cls.families:
    others = objectives_for(family)
    raise ConfigError(
        f'`objective={name!r}`: does not work with `model.family={family!r}`: '
        f'{name} needs model.family in ({", ".join(cls.families)}); '
        f'for {family!r} use objective in ({", ".join(others) or "none"})')
  if tokenizer is not None:   # None: the objective reads no text (setup.prepare)
    _check_tokens(cls, family, tokenizer)
  return cls(config, tokenizer)


def _lacks(cls, family, tokenizer):
  """The special tokens (registry names) objective `cls` needs on `family` that `tokenizer`
  does not have."""
  return [t for t in cls.tokens_needed(family) if not special_tokens.has(tokenizer, t)]


def _check_tokens(cls, family, tokenizer):
  """ConfigError naming the missing token when `tokenizer` cannot frame `cls`'s examples (e.g.
  MLM on GPT-2's vocabulary, which has no mask token)."""
  missing = _lacks(cls, family, tokenizer)
  if not missing:
    return
  where = getattr(tokenizer, 'directory', None) or getattr(tokenizer, 'model_path', 'its tokenizer')
  usable = [n for n in objectives_for(family) if not _lacks(REGISTRY[n], family, tokenizer)]
  raise ConfigError(
      f'`objective={cls.name}`: needs a {" and a ".join(missing)} token, which the tokenizer '
      f'{where} does not have; with this tokenizer and model.family={family} use objective in '
      f'({", ".join(usable) or "none"})')


__all__ = ['Objective', 'REGISTRY', 'check_config', 'declared_fields', 'get', 'objectives_for',
           'reads_text', 'MaskedLM', 'CausalLM', 'PrefixLM', 'SpanCorruption', 'Seq2Seq',
           'Classification', 'UL2', 'ImageClassification']
