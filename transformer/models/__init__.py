"""Pure networks. `build(config.model, head=..., rngs=...)` is the one way to make a model."""

from flax import nnx

from transformer.models.blocks import Block, Stack
from transformer.models.families import DecoderOnly, EncoderDecoder, EncoderOnly
from transformer.models.hparams import HParams

FAMILY_CLASSES = {'encoder': EncoderOnly, 'decoder': DecoderOnly,
                  'encoder_decoder': EncoderDecoder}


def build(model_config, *, head='lm', rngs: nnx.Rngs):
  """Validate `model_config` (config.model or HParams) and build the family it names."""
  hp = model_config if isinstance(model_config, HParams) else HParams.from_config(model_config)
  return FAMILY_CLASSES[hp.family](hp, head=head, rngs=rngs)


__all__ = ['build', 'HParams', 'EncoderOnly', 'DecoderOnly', 'EncoderDecoder', 'Block', 'Stack']
