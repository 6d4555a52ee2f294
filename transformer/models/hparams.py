"""The networks' own dataclass of hyperparameters, validated once from `config.model`.

Networks never read the ConfigDict: `HParams.from_config(config.model)` checks every field and
raises a one-line ConfigError naming the key (`model.num_heads`, ...) and how to fix it.
"""

import dataclasses
import math

import jax.numpy as jnp

from transformer.errors import ConfigError

FAMILIES = ('encoder', 'decoder', 'encoder_decoder')
POSITIONS = ('learned', 'sinusoidal', 'relative', 'rotary')
NORMS = ('layernorm', 'rmsnorm')
ACTIVATIONS = ('relu', 'gelu', 'gelu_tanh', 'silu', 'geglu', 'swiglu', 'reglu')
REMAT = ('none', 'full', 'dots')
DTYPES = ('float32', 'bfloat16', 'float16')
IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'reference')


@dataclasses.dataclass(frozen=True)
class HParams:
  family: str
  vocab_size: int
  num_layers: int
  num_decoder_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  d_ff: int
  activation: str
  norm: str
  norm_eps: float
  norm_position: str
  embed_norm: bool
  final_norm: bool
  positions: str
  max_len: int
  relative_buckets: int
  relative_max_distance: int
  rotary_base: float
  type_vocab_size: int
  use_bias: bool
  scale_attention: bool
  scale_embeddings: bool
  tie_embeddings: bool
  scale_tied_logits: bool
  lm_head_bias: bool
  mlm_transform: bool
  num_classes: int
  classifier_pooler: bool
  decoder_start_id: int
  dropout_rate: float
  attention_dropout_rate: float
  mlp_dropout: bool
  final_dropout: bool
  dtype: str
  param_dtype: str
  attention_impl: str
  scan_layers: bool
  remat: str
  init_std: float

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self):
    return jnp.dtype(self.param_dtype)

  @property
  def decoder_layers(self):
    return self.num_decoder_layers or self.num_layers

  @classmethod
  def from_config(cls, model_config):
    """Validate `config.model` (a ConfigDict or dict) and return HParams with defaults resolved."""
    values = dict(model_config)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ConfigError(f'unknown key model.{unknown[0]}; valid keys are in configs/common.py')
    missing = sorted(names - set(values))
    if missing:
      raise ConfigError(f'model.{missing[0]} is not set; start from configs/common.py:model_config')
    values['head_dim'] = values['head_dim'] or (
        values['d_model'] // values['num_heads'] if values['num_heads'] > 0 else 0)
    values['num_kv_heads'] = values['num_kv_heads'] or values['num_heads']
    hp = cls(**values)
    hp.validate()
    return hp

  def validate(self):
    def bad(key, msg):
      raise ConfigError(f'model.{key}={getattr(self, key)!r}: {msg}')

    choices = dict(family=FAMILIES, positions=POSITIONS, norm=NORMS, activation=ACTIVATIONS,
                   remat=REMAT, dtype=DTYPES, param_dtype=DTYPES, attention_impl=IMPLEMENTATIONS,
                   norm_position=('pre', 'post'))
    for key, allowed in choices.items():
      if getattr(self, key) not in allowed:
        bad(key, f'choose one of {", ".join(allowed)}')
    for key in ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'd_ff'):
      if getattr(self, key) <= 0:
        bad(key, 'must be a positive integer' + (
            ' (set it, or leave 0 and let training take it from the tokenizer)'
            if key == 'vocab_size' else ''))
    if self.head_dim == self.d_model // self.num_heads and self.d_model % self.num_heads:
      bad('num_heads', f'does not divide model.d_model={self.d_model}; '
          'change one, or set model.head_dim explicitly')
    zero_means = dict(num_decoder_layers='as many as model.num_layers',
                      max_len='no position table', type_vocab_size='no token types')
    for key, meaning in zero_means.items():
      if getattr(self, key) < 0:
        bad(key, f'must be non-negative; 0 means {meaning}')
    if self.head_dim <= 0:
      bad('head_dim', 'must be a positive integer; leave it 0 for model.d_model // model.num_heads')
    if self.num_kv_heads <= 0:
      bad('num_kv_heads', 'must be a positive integer; leave it 0 for model.num_heads '
          '(multi-head attention)')
    if self.positions == 'relative' and self.relative_buckets < 4:
      bad('relative_buckets', 'T5 relative positions need at least 4 buckets; T5 uses 32')
    if self.positions == 'relative' and self.relative_max_distance <= self.relative_buckets // 2:
      bad('relative_max_distance', f'must be larger than model.relative_buckets // 2 = '
          f'{self.relative_buckets // 2}; T5 uses 128')
    for key, ok, wanted in (('norm_eps', lambda v: v > 0, '> 0, e.g. 1e-6'),
                            ('init_std', lambda v: v >= 0, '>= 0 (0: fan-in scaling)'),
                            ('rotary_base', lambda v: v > 0, '> 0, e.g. 10000')):
      if not (math.isfinite(getattr(self, key)) and ok(getattr(self, key))):
        bad(key, f'must be a finite number {wanted}; set it in model.{key}')
    if self.num_heads % self.num_kv_heads:
      bad('num_kv_heads', f'must divide model.num_heads={self.num_heads} (grouped-query attention)')
    if self.positions == 'rotary' and self.head_dim % 2:
      bad('head_dim', 'rotary positions need an even head dimension')
    if self.positions == 'learned' and self.max_len <= 0:
      bad('max_len', 'learned positions need a positive table size')
    if self.type_vocab_size and self.family != 'encoder':
      bad('type_vocab_size', 'token types are only used by encoder-only models; set it to 0')
    if self.num_decoder_layers and self.family != 'encoder_decoder':
      bad('num_decoder_layers', 'only encoder_decoder models have a separate decoder stack; '
          'use model.num_layers')
    if self.scale_tied_logits and not self.tie_embeddings:
      bad('scale_tied_logits', 'only applies with model.tie_embeddings=True')
    if not 0.0 <= self.dropout_rate < 1.0:
      bad('dropout_rate', 'must be in [0, 1)')
    if not 0.0 <= self.attention_dropout_rate < 1.0:
      bad('attention_dropout_rate', 'must be in [0, 1)')
    if self.num_classes < 2:
      bad('num_classes', 'a classifier needs at least 2 classes')
