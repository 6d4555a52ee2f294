"""config.json -> our `config.model` fields, one small function per Hugging Face model_type.

Each function returns (family config spec, model fields), e.g. ('configs/bert.py:base', {...}).
The family config only supplies the training defaults (objective, optimizer, ...); every
architectural field that config.json decides is set from config.json.
"""

import numpy as np

from transformer.data import hf_files
from transformer.errors import ConfigError
from transformer.hf import mapping
from transformer.hf import vit

# Hugging Face ACT2FN names -> ours. gelu_new / gelu_pytorch_tanh are the tanh approximation.
ACTIVATIONS = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh',
               'relu': 'relu', 'silu': 'silu', 'swish': 'silu'}
# T5 feed_forward_proj: '<act>' or 'gated-<act>'; transformers runs 'gated-gelu' as gelu_new (tanh).
GATED = {'gelu': 'geglu', 'gelu_new': 'geglu', 'gelu_pytorch_tanh': 'geglu', 'relu': 'reglu',
         'silu': 'swiglu', 'swish': 'swiglu'}
T5_FEED_FORWARD = {**ACTIVATIONS, **{f'gated-{k}': v for k, v in GATED.items()}}


class HFConfig:
  """config.json values with one-line errors naming the missing, mistyped or unsupported field."""

  def __init__(self, values: dict, filename: str):
    self.values, self.filename = values, filename

  def __call__(self, key, default=KeyError, kind=None):
    """config.json's `key` (`default` when absent or null; KeyError: required), of JSON type
    `kind`: by default the default's type, and an integer for a required field (the sizes)."""
    value = self.values.get(key)
    if value is None:
      if default is KeyError:
        raise ConfigError(f'{self.filename}: field "{key}" is missing')
      return default
    kind = kind or (int if default is KeyError else type(default))
    return hf_files.typed(self.filename, key, value, kind)

  def bad(self, key, why):
    raise ConfigError(f'{self.filename}: "{key}": {self.values.get(key)!r} {why}')

  def activation(self, key, default, table=ACTIVATIONS):
    name = self(key, default)
    if name not in table:
      self.bad(key, f'is not supported; use one of {", ".join(sorted(table))}')
    return table[name]

  def require(self, key, expected, default=None):
    if self(key, default, type(expected)) != expected:
      self.bad(key, f'is not supported (only {expected!r})')


def bert(c: HFConfig, weights):
  del weights
  c.require('position_embedding_type', 'absolute', 'absolute')
  if c('is_decoder', False) or c('add_cross_attention', False):
    c.bad('is_decoder', 'is not supported: only BERT encoders are imported')
  return 'configs/bert.py:base', dict(
      family='encoder', vocab_size=c('vocab_size'), num_layers=c('num_hidden_layers'),
      d_model=c('hidden_size'), num_heads=c('num_attention_heads'), head_dim=0,
      d_ff=c('intermediate_size'), activation=c.activation('hidden_act', 'gelu'),
      norm_eps=c('layer_norm_eps', 1e-12), max_len=c('max_position_embeddings'),
      type_vocab_size=c('type_vocab_size', 2), dropout_rate=c('hidden_dropout_prob', 0.1),
      attention_dropout_rate=c('attention_probs_dropout_prob', 0.1), mlp_dropout=False,
      final_dropout=False, tie_embeddings=bool(c('tie_word_embeddings', True)))


def distilbert(c: HFConfig, weights):
  """DistilBERT: BERT without token types or pooler, eps 1e-12 fixed in its code, learned or
  sinusoidal positions (whose table the file still holds: checked, then left to our encoding)."""
  dim, max_len = c('dim'), c('max_position_embeddings')
  sinusoidal = bool(c('sinusoidal_pos_embds', False))
  if sinusoidal:
    table = weights.get('embeddings.position_embeddings.weight', (max_len, dim))
    if not np.allclose(table, mapping.sinusoidal_table(max_len, dim), atol=1e-6):
      c.bad('sinusoidal_pos_embds', 'but embeddings.position_embeddings.weight is not the '
            'sinusoidal table; set it false to import the table as learned positions')
  return 'configs/bert.py:base', dict(
      family='encoder', vocab_size=c('vocab_size'), num_layers=c('n_layers'), d_model=dim,
      num_heads=c('n_heads'), head_dim=0, d_ff=c('hidden_dim'),
      activation=c.activation('activation', 'gelu'), norm_eps=1e-12, max_len=max_len,
      positions='sinusoidal' if sinusoidal else 'learned', type_vocab_size=0,
      dropout_rate=c('dropout', 0.1), attention_dropout_rate=c('attention_dropout', 0.1),
      mlp_dropout=False, final_dropout=False, classifier_pooler=True, pooler_activation='relu',
      tie_embeddings=bool(c('tie_word_embeddings', True)))


def gpt2(c: HFConfig, weights):
  del weights
  c.require('scale_attn_weights', True, True)
  c.require('scale_attn_by_inverse_layer_idx', False, False)
  c.require('add_cross_attention', False, False)
  d_model = c('n_embd')
  return 'configs/gpt2.py:small', dict(
      family='decoder', vocab_size=c('vocab_size'), num_layers=c('n_layer'), d_model=d_model,
      num_heads=c('n_head'), head_dim=0, d_ff=c('n_inner', 4 * d_model),
      activation=c.activation('activation_function', 'gelu_new'),
      norm_eps=c('layer_norm_epsilon', 1e-5), max_len=c('n_positions'),
      dropout_rate=c('resid_pdrop', 0.1), attention_dropout_rate=c('attn_pdrop', 0.1),
      mlp_dropout=False, final_dropout=False, tie_embeddings=bool(c('tie_word_embeddings', True)))


def bart(c: HFConfig, weights):
  del weights
  c.require('normalize_before', False, False)  # mBART-style pre-norm configs are not BART
  c.require('add_final_layer_norm', False, False)
  c.require('normalize_embedding', True, True)
  for enc, dec in (('encoder_attention_heads', 'decoder_attention_heads'),
                   ('encoder_ffn_dim', 'decoder_ffn_dim')):
    if c(enc) != c(dec):
      c.bad(dec, f'differs from "{enc}"={c(enc)}; our encoder and decoder share one size')
  return 'configs/bart.py:base', dict(
      family='encoder_decoder', vocab_size=c('vocab_size'), num_layers=c('encoder_layers'),
      num_decoder_layers=c('decoder_layers'), d_model=c('d_model'),
      num_heads=c('encoder_attention_heads'), head_dim=0, d_ff=c('encoder_ffn_dim'),
      activation=c.activation('activation_function', 'gelu'), norm_eps=1e-5,
      max_len=c('max_position_embeddings'), scale_embeddings=bool(c('scale_embedding', False)),
      dropout_rate=c('dropout', 0.1), attention_dropout_rate=c('attention_dropout', 0.0),
      mlp_dropout=bool(c('activation_dropout', 0.0)), final_dropout=False,  # at dropout_rate
      tie_embeddings=bool(c('tie_word_embeddings', True)), lm_head_bias=True,
      decoder_start_id=c('decoder_start_token_id', 2))


def t5_head(c: HFConfig, weights):
  """(tied, scaled): whether logits use the shared embedding, and whether they are scaled.

  Original T5 configs say tie_word_embeddings (true: v1.0, tied and scaled by d_model**-0.5;
  false: v1.1, untied lm_head, unscaled). Newer transformers always write tie_word_embeddings
  true plus scale_decoder_outputs, and keep lm_head.weight only when it differs from the shared
  embedding, so a distinct lm_head.weight in the file means untied.
  """
  tie_flag = bool(c('tie_word_embeddings', True))
  scaled = bool(c('scale_decoder_outputs', tie_flag))
  distinct_head = weights.has('lm_head.weight') and weights.has('shared.weight') and not (
      weights.tensors['lm_head.weight'].shape == weights.tensors['shared.weight'].shape and
      (weights.tensors['lm_head.weight'] == weights.tensors['shared.weight']).all())
  return tie_flag and not distinct_head, scaled


def t5(c: HFConfig, weights):
  activation = c.activation('feed_forward_proj', 'relu', T5_FEED_FORWARD)
  tied, scaled = t5_head(c, weights)
  v1_1 = activation in GATED.values()
  return 'configs/t5.py:v1_1_base' if v1_1 else 'configs/t5.py:base', dict(
      family='encoder_decoder', vocab_size=c('vocab_size'), num_layers=c('num_layers'),
      num_decoder_layers=c('num_decoder_layers', c('num_layers')), d_model=c('d_model'),
      num_heads=c('num_heads'), head_dim=c('d_kv'), d_ff=c('d_ff'), activation=activation,
      norm_eps=c('layer_norm_epsilon', 1e-6),
      relative_buckets=c('relative_attention_num_buckets', 32),
      relative_max_distance=c('relative_attention_max_distance', 128),
      dropout_rate=c('dropout_rate', 0.1), mlp_dropout=True, final_dropout=True,
      tie_embeddings=tied, scale_tied_logits=tied and scaled,
      decoder_start_id=c('decoder_start_token_id', 0))


ARCHITECTURES = {'bert': bert, 'distilbert': distilbert, 'gpt2': gpt2, 'bart': bart, 't5': t5,
                 'mt5': t5, 'vit': vit.config_fields}
WEIGHT_PREFIXES = {'bert': ('bert.', ''), 'distilbert': ('distilbert.', ''),
                   'gpt2': ('transformer.', ''), 'bart': ('model.', ''),
                   't5': ('',), 'mt5': ('',), 'vit': ('vit.', '')}


def model_type(c: HFConfig) -> str:
  name = c('model_type', kind=str)
  if name not in ARCHITECTURES:
    c.bad('model_type', f'is not supported; supported: {", ".join(sorted(ARCHITECTURES))}')
  return name
