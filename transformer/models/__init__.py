"""Pure networks. `build(config.model, head=..., rngs=...)` is the one way to make a model."""

from flax import nnx

from transformer.models.blocks import Block, Stack
from transformer.models.families import DecoderOnly, EncoderDecoder, EncoderOnly
from transformer.models.hparams import HParams

FAMILY_CLASSES = {'encoder': EncoderOnly, 'decoder': DecoderOnly,
                  'encoder_decoder': EncoderDecoder}


def raw_key(key):
  """The name or index inside one pytree key entry (DictKey, GetAttrKey, SequenceKey) or a
  plain key."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return getattr(key, attr)
  return key


def path_name(keypath):
  """'decoder/layers/0/mlp/wi/kernel': a parameter's pytree key path (or nnx flat-state keys)
  as the one name checkpoints, sharding tables and Hugging Face mappings use; a trailing nnx
  '.value' wrapper is dropped."""
  names = [str(raw_key(k)) for k in keypath]
  return '/'.join(names[:-1] if names and names[-1] == 'value' else names)


def build(model_config, *, head='lm', rngs: nnx.Rngs):
  """Validate `model_config` (config.model or HParams) and build the family it names."""
  hp = model_config if isinstance(model_config, HParams) else HParams.from_config(model_config)
  return FAMILY_CLASSES[hp.family](hp, head=head, rngs=rngs)


__all__ = ['build', 'path_name', 'raw_key', 'HParams', 'EncoderOnly', 'DecoderOnly', 'EncoderDecoder', 'Block', 'Stack']
