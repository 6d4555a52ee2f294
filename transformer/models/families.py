"""The three families, built from the same Stack/blocks and heads.

EncoderOnly (BERT), DecoderOnly (GPT), EncoderDecoder (2017 Transformer, T5, BART). `head` is
'lm' (masked-LM head for encoders, LM head otherwise) or 'classification'. Structure comes in as
segment ids (0 = padding) and positions; when omitted, every token is real and positions count
from 0. An image model (hp.patch_size > 0, ViT) is an EncoderOnly whose tokens are the patches
of images [B, H, W, C] (models/patches.py: its `token_embed` adds the positions); its 'lm' head
is none (the final features, Hugging Face's ViTModel) and its classifier reads patches.pool.
"""

import jax.numpy as jnp
from flax import nnx

from transformer.models import layers
from transformer.errors import ConfigError
from transformer.models import blocks, heads, patches
from transformer.models.hparams import HParams

HEADS = ('lm', 'classification')


def _defaults(tokens, segment_ids, positions):
  if segment_ids is None:
    segment_ids = jnp.ones(tokens.shape, jnp.int32)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
  return segment_ids, positions


class _Model(nnx.Module):
  """Shared pieces: the token embedding and embedding scaling."""

  def __init__(self, hp: HParams, head: str, rngs: nnx.Rngs):
    if head not in HEADS:
      raise ConfigError(f'model head {head!r} is unknown; choose one of {HEADS}')
    self.hp, self.head = hp, head
    if hp.patch_size:   # an image model: its tokens are patches
      self.token_embed = patches.PatchEmbed(hp, rngs=rngs)
      return
    std = hp.std(hp.d_model ** -0.5 if hp.scale_embeddings else 1.0)
    self.token_embed = layers.Embed(hp.vocab_size, hp.d_model, init_std=std,
                                    dtype=hp.compute_dtype, param_dtype=hp.params_dtype,
                                    kernels=hp.kernels, rngs=rngs)

  def embed(self, tokens):
    x = self.token_embed(tokens)
    if self.hp.scale_embeddings:
      x = x * jnp.sqrt(jnp.asarray(self.hp.d_model, x.dtype))
    return x


class EncoderOnly(_Model):
  """BERT-style bidirectional encoder with a masked-LM or classification head."""

  def __init__(self, hp: HParams, *, head='lm', rngs: nnx.Rngs):
    super().__init__(hp, head, rngs)
    if hp.type_vocab_size:
      self.token_type_embed = layers.Embed(hp.type_vocab_size, hp.d_model,
                                           init_std=hp.std(1.0), dtype=hp.compute_dtype,
                                           param_dtype=hp.params_dtype, rngs=rngs)
    self.encoder = blocks.Stack(hp, num_layers=hp.num_layers, causal=False, rngs=rngs)
    if head == 'lm' and not hp.patch_size:
      self.mlm_head = heads.MLMHead(hp, rngs=rngs)
    elif head != 'lm':
      self.classifier = heads.ClassificationHead(hp, rngs=rngs)

  def encode(self, tokens, segment_ids=None, positions=None, token_types=None, *,
             deterministic=True):
    x = self.embed(tokens)   # images: [B, H, W, C] -> [B, L, D]
    segment_ids, positions = _defaults(x[..., 0], segment_ids, positions)
    if self.hp.type_vocab_size:
      x = x + self.token_type_embed(jnp.zeros_like(tokens) if token_types is None else token_types)
    return self.encoder(x, segment_ids=segment_ids, positions=positions,
                        deterministic=deterministic)

  def __call__(self, tokens, segment_ids=None, positions=None, token_types=None, *,
               deterministic=True, logits_at=None):
    """MLM logits [B, L, V] (or [B, P, V] at the positions `logits_at` [B, P] only: the
    vocabulary projection of MLM training needs the masked tokens alone), or class logits."""
    x = self.encode(tokens, segment_ids, positions, token_types, deterministic=deterministic)
    if self.hp.patch_size:
      return x if self.head == 'lm' else self.classifier(patches.pool(x, self.hp),
                                                          deterministic=deterministic)
    if self.head == 'lm':
      if logits_at is not None:
        x = jnp.take_along_axis(x, logits_at[..., None], axis=1)
      return self.mlm_head(x, self.token_embed)
    return self.classifier(x[:, 0], deterministic=deterministic)


class DecoderOnly(_Model):
  """GPT-style causal decoder (prefix-LM when `prefix` is given) with an LM or classification head."""

  def __init__(self, hp: HParams, *, head='lm', rngs: nnx.Rngs):
    super().__init__(hp, head, rngs)
    self.decoder = blocks.Stack(hp, num_layers=hp.num_layers, causal=True, rngs=rngs)
    if head == 'lm':
      self.lm_head = heads.LMHead(hp, rngs=rngs)
    else:
      self.classifier = heads.ClassificationHead(hp, rngs=rngs)

  def init_cache(self, batch_size, max_len):
    self.decoder.init_cache(batch_size, max_len)

  def reorder_cache(self, rows):
    self.decoder.reorder_cache(rows)

  def __call__(self, tokens, segment_ids=None, positions=None, prefix=None, *,
               deterministic=True, decode=False):
    segment_ids, positions = _defaults(tokens, segment_ids, positions)
    x = self.decoder(self.embed(tokens), segment_ids=segment_ids, positions=positions,
                     prefix=prefix, deterministic=deterministic, decode=decode)
    if self.head == 'lm':
      return self.lm_head(x, self.token_embed)
    last = jnp.maximum(jnp.sum(segment_ids == 1, axis=1) - 1, 0)  # last token of example 1
    pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    return self.classifier(pooled, deterministic=deterministic)


class EncoderDecoder(_Model):
  """Encoder + decoder with cross-attention, sharing one token embedding."""

  def __init__(self, hp: HParams, *, head='lm', rngs: nnx.Rngs):
    super().__init__(hp, head, rngs)
    if head != 'lm':
      raise ConfigError('objective=classification needs model.family encoder or decoder; '
                        'encoder_decoder models have an LM head only')
    self.encoder = blocks.Stack(hp, num_layers=hp.num_layers, causal=False, rngs=rngs)
    self.decoder = blocks.Stack(hp, num_layers=hp.decoder_layers, causal=True,
                                cross_attention=True, rngs=rngs)
    if hp.share_encoder_decoder:
      blocks.share_layers(self.encoder, self.decoder)
    self.lm_head = heads.LMHead(hp, rngs=rngs)

  def init_cache(self, batch_size, max_len, encoded=None, inputs_segment_ids=None):
    """Caches for decoding up to `max_len` tokens; given the encoder output (and its segment
    ids, 0 on padding), its cross-attention keys/values are computed here, once."""
    if encoded is not None:
      if inputs_segment_ids is None:
        inputs_segment_ids = jnp.ones(encoded.shape[:2], jnp.int32)
      inputs_segment_ids = (inputs_segment_ids != 0).astype(jnp.int32)
    self.decoder.init_cache(batch_size, max_len, encoded, inputs_segment_ids)

  def reorder_cache(self, rows, memory=False):
    self.decoder.reorder_cache(rows, memory=memory)

  def encode(self, inputs, inputs_segment_ids=None, inputs_positions=None, *,
             deterministic=True):
    segment_ids, positions = _defaults(inputs, inputs_segment_ids, inputs_positions)
    return self.encoder(self.embed(inputs), segment_ids=segment_ids, positions=positions,
                        deterministic=deterministic)

  def decode(self, encoded, decoder_inputs, *, inputs_segment_ids=None, decoder_segment_ids=None,
             decoder_positions=None, deterministic=True, decode=False):
    decoder_segment_ids, decoder_positions = _defaults(decoder_inputs, decoder_segment_ids,
                                                       decoder_positions)
    if inputs_segment_ids is None:
      inputs_segment_ids = jnp.ones(encoded.shape[:2], jnp.int32)
    if decode:  # one example per row while decoding: the query token sees every input token
      decoder_segment_ids = jnp.ones_like(decoder_segment_ids)
      inputs_segment_ids = (inputs_segment_ids != 0).astype(jnp.int32)
    x = self.decoder(self.embed(decoder_inputs), segment_ids=decoder_segment_ids,
                     positions=decoder_positions, encoded=encoded,
                     encoded_segment_ids=inputs_segment_ids, deterministic=deterministic,
                     decode=decode)
    return self.lm_head(x, self.token_embed)

  def __call__(self, inputs, decoder_inputs, inputs_segment_ids=None, inputs_positions=None,
               decoder_segment_ids=None, decoder_positions=None, *, deterministic=True):
    encoded = self.encode(inputs, inputs_segment_ids, inputs_positions,
                          deterministic=deterministic)
    if inputs_segment_ids is None:
      inputs_segment_ids = jnp.ones(inputs.shape, jnp.int32)
    return self.decode(encoded, decoder_inputs, inputs_segment_ids=inputs_segment_ids,
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions, deterministic=deterministic)
