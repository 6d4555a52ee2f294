"""The networks' own dataclass of hyperparameters, validated once from `config.model`.

Networks never read the ConfigDict: `HParams.from_config(config.model)` checks every field and
raises a one-line ConfigError naming the key (`model.num_heads`, ...) and how to fix it.
"""

import dataclasses
import math

import jax.numpy as jnp

from transformer.errors import ConfigError
from transformer.models import knobs
from transformer.models.attention import IMPLEMENTATIONS
from transformer.models.kernels import KERNELS
from transformer.models.layers import ACTIVATIONS as _PLAIN_ACTIVATIONS
from transformer.models.layers import GATED

FAMILIES = ('encoder', 'decoder', 'encoder_decoder')
POSITIONS = ('learned', 'sinusoidal', 'relative', 'rotary', 'alibi', 'none', 'learned_2d')
NORMS = ('layernorm', 'rmsnorm')
ACTIVATIONS = (*_PLAIN_ACTIVATIONS, *GATED)    # models/layers.py owns them
REMAT = ('none', 'dots', 'full')               # blocks.REMAT_POLICIES maps each but 'none'
DTYPES = ('float32', 'bfloat16', 'float16')
INITS = ('normal', 'fan_in')
NORM_POSITIONS = ('pre', 'post')
POOLER_ACTIVATIONS = ('tanh', 'relu')
POOLINGS = ('cls', 'gap')                     # image models: models/patches.py


@dataclasses.dataclass(frozen=True)
class HParams:
  """The model schema: every `config.model` key, its default (the 'tiny' decoder) and meaning.

  `configs/common.py:model_config()` builds the ConfigDict from these defaults; family files
  overwrite what their architecture sets.
  """
  family: str = 'decoder'              # encoder | decoder | encoder_decoder
  vocab_size: int = 0                  # 0: take it from the tokenizer (data.vocab_size)
  num_layers: int = 2                  # encoder layers (encoder family) or decoder layers
  num_decoder_layers: int = 0          # encoder_decoder only; 0: same as num_layers
  share_encoder_decoder: bool = False  # encoder_decoder: decoder layer i reuses encoder layer i's
                                       # self-attention, MLP and their norms (T5 "shared")
  d_model: int = 128
  num_heads: int = 4
  num_kv_heads: int = 0                # 0: same as num_heads; smaller: grouped-query attention
  head_dim: int = 0                    # 0: d_model // num_heads
  d_ff: int = 512
  activation: str = 'gelu'             # one of ACTIVATIONS (geglu/swiglu/reglu are gated)
  norm: str = 'layernorm'              # layernorm | rmsnorm
  norm_eps: float = 1e-5
  norm_position: str = 'pre'           # pre | post
  embed_norm: bool = False             # a norm right after the embeddings (BERT, BART)
  final_norm: bool = True              # a norm after the last block (pre-norm models)
  positions: str = 'learned'           # learned | sinusoidal | relative | rotary | alibi | none
                                       # (none: NoPE, decoder family only) | learned_2d (image
                                       # models: a table over the patch grid)
  max_len: int = 512                   # rows of a learned position table
  relative_buckets: int = 32           # T5 relative position bias
  relative_max_distance: int = 128
  rotary_base: float = 10000.0
  qk_norm: str = 'none'                # none | rmsnorm | layernorm on each head's queries and keys
                                       # before rotary, a scale per head_dim (OLMo 2, ViT-22B)
  attention_softcap: float = 0.0       # 0: off; attention logits -> cap * tanh(logits / cap)
  local_window: int = 0                # 0: off; sliding-window self-attention: a query sees keys
                                       # < w positions away (causal i-w < j <= i; |i-j| < w)
  attention_pattern: str = 'local'     # the local layers: local (all) | K:M (K local, M global,
                                       # repeated) | a cycle of l/g letters (models/knobs.py)
  parallel_block: bool = False         # attention and MLP read one norm output, both add to the
                                       # residual (GPT-J, PaLM); pre-norm only
  logit_softcap: float = 0.0           # 0: off; output logits -> cap * tanh(logits / cap)
  moe_experts: int = 0                 # 0: dense MLPs; E: every moe_every-th MLP is a mixture
                                       # of E experts (models/moe.py)
  moe_top_k: int = 1                   # experts per token (Switch 1; GShard, Mixtral 2)
  moe_every: int = 1                   # layer i's MLP is MoE when (i + 1) % moe_every == 0
  moe_capacity_factor: float = 1.25    # per row, each expert takes ceil(factor * L * k / E)
                                       # tokens, the rest are dropped (Switch); 0: dropless
  moe_shared_experts: int = 0          # experts every token also runs (DeepSeekMoE)
  moe_aux_loss: float = 0.01           # weight of the load-balancing loss (Switch: 1e-2)
  moe_z_loss: float = 0.001            # weight of the router z-loss (ST-MoE: 1e-3)
  type_vocab_size: int = 0             # BERT token-type (segment A/B) embeddings; 0: none
  use_bias: bool = True                # biases in attention and MLP projections
  scale_attention: bool = True         # q.k / sqrt(head_dim); T5 folds the scale into its init
  scale_embeddings: bool = False       # token embeddings * sqrt(d_model) (2017 Transformer)
  tie_embeddings: bool = True          # the output projection shares the token embedding matrix
  scale_tied_logits: bool = False      # T5 v1.0: decoder output * d_model**-0.5 before tied logits
  lm_head_bias: bool = False           # a bias on the vocabulary logits (BERT, BART)
  mlm_transform: bool = False          # BERT: dense + activation + norm before the MLM logits
  num_classes: int = 2                 # classification head; 1: regression (STS-B)
  classifier_pooler: bool = False      # BERT pooler (dense + tanh on the first token)
  pooler_activation: str = 'tanh'      # the pooler's: tanh (BERT) | relu (DistilBERT's
                                       # pre_classifier)
  classifier_bias: bool = True         # a bias on the class logits (GPT-2's score layer has none)
  patch_size: int = 0                  # > 0: an image model (ViT, encoder family): its tokens
                                       # are the image's patch_size x patch_size patches, embedded
                                       # by models/patches.py; needs positions='learned_2d'
  image_size: int = 224                # image models: the side of the square image the position
                                       # table is for (other sizes interpolate it in 2-D)
  num_channels: int = 3                # image models: channels of the input images
  pooling: str = 'cls'                 # image models: cls (a class token) | gap (mean of patches)
  image_mean: tuple = (0.5, 0.5, 0.5)  # image models: per-channel normalisation of pixels
  image_std: tuple = (0.5, 0.5, 0.5)   # scaled to [0, 1]: (x / 255 - mean) / std (in the model)
  decoder_start_id: int = 0            # encoder_decoder: the decoder's first input (T5 0, BART 2)
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  mlp_dropout: bool = True             # dropout also after the MLP activation (T5, BART)
  final_dropout: bool = True           # dropout also after the final norm (T5); not GPT-2
  dtype: str = 'float32'               # compute dtype (params stay param_dtype)
  param_dtype: str = 'float32'
  attention_impl: str = 'auto'         # one of IMPLEMENTATIONS
  kernels: str = 'tuned'               # tuned: the custom VJPs of models/kernels.py (XLA:CPU's
                                       # fast orders); plain: jax.nn.gelu, dot_general, x @ table.T
                                       # and a logsumexp cross-entropy, all by plain autodiff
  scan_layers: bool = False            # nnx.scan over layers: compile time flat in depth (the
                                       # configs' non-tiny sizes set it: configs/common.py)
  remat: str = 'none'                  # none | full | dots (save matmul outputs only)
  init: str = 'normal'                 # normal: N(0, init_std) everywhere (GPT-2, BERT);
                                       # fan_in: 1/sqrt(fan-in) kernels, unit embeddings (T5)
  init_std: float = 0.02               # the std of init='normal'
  mup_base_width: int = 0              # 0: off; muP (Yang et al. 2022, Table 8, Adam) against a
                                       # base model of this d_model (width only, not depth):
                                       # hidden init std and lr / ratio, logits / ratio,
                                       # attention 1/head_dim; equal to the default at the base

  @classmethod
  def defaults(cls):
    """{key: default} of every field, in schema order."""
    return {f.name: f.default for f in dataclasses.fields(cls)}

  def std(self, fan_in_value):
    """The init std of a weight: init_std under init='normal', `fan_in_value` under 'fan_in'
    (None means 1/sqrt(fan-in) to the layer that gets it)."""
    return self.init_std if self.init == 'normal' else fan_in_value

  @property
  def mup_ratio(self):
    """muP's width multiplier d_model / model.mup_base_width (1 when muP is off). Every width
    (d_ff, head_dim at a fixed head count) is taken to grow with d_model."""
    return self.d_model / self.mup_base_width if self.mup_base_width else 1.0

  def hidden_std(self):
    """Init std of a hidden matrix (the blocks' projections, the heads' d_model x d_model
    transforms): std(None), under muP with init='normal' init_std / sqrt(ratio), a variance
    ~ 1/fan-in (init='fan_in' already is)."""
    std = self.std(None)
    return None if std is None else std * self.mup_ratio ** -0.5

  @property
  def attention_scale(self):
    """The attention logits' scale under muP, 1/head_dim: sqrt(base head_dim) / head_dim, which
    is 1/sqrt(head_dim) at the base width; None (1/sqrt(head_dim)) without muP."""
    return self.head_dim ** -0.5 * self.mup_ratio ** -0.5 if self.mup_base_width else None

  @property
  def output_multiplier(self):
    """muP's readout multiplier on the output (vocabulary, class) logits: 1 / ratio."""
    return 1.0 / self.mup_ratio

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
  def from_config(cls, model_config, *, vocabulary=True):
    """Validate `config.model` (a ConfigDict or dict; absent keys take their defaults) and
    return HParams with head_dim and num_kv_heads resolved. `vocabulary=False`: the model reads
    no text (its objective declares no text field), so vocab_size 0 means no vocabulary."""
    values = {**cls.defaults(), **dict(model_config)}
    unknown = sorted(set(values) - set(cls.defaults()))
    if unknown:
      raise ConfigError(f'`model.{unknown[0]}`: not a model key; the keys and their meaning are '
                        'in transformer/models/hparams.py')
    values['head_dim'] = values['head_dim'] or (
        values['d_model'] // values['num_heads'] if values['num_heads'] > 0 else 0)
    values['num_kv_heads'] = values['num_kv_heads'] or values['num_heads']
    for key in ('image_mean', 'image_std'):   # config.json gives lists; HParams is hashable
      values[key] = tuple(float(v) for v in values[key])
    hp = cls(**values)
    hp.validate(vocabulary=vocabulary)
    return hp

  def _bad(self, key, msg):
    raise ConfigError(f'`model.{key}={getattr(self, key)!r}`: {msg}')

  def validate(self, *, vocabulary=True):
    """Every field checked; the first problem raises a one-line ConfigError naming the key."""
    self._validate_choices()
    self._validate_sizes(vocabulary)
    self._validate_numbers()
    self._validate_combinations()
    self._validate_image()
    knobs.validate(self)

  def layer_windows(self, num_layers):
    """The self-attention window of each layer of a stack (0: global; models/knobs.py)."""
    return knobs.layer_windows(self, num_layers)

  def _validate_choices(self):
    choices = dict(family=FAMILIES, positions=POSITIONS, norm=NORMS, activation=ACTIVATIONS,
                   remat=REMAT, dtype=DTYPES, param_dtype=DTYPES, attention_impl=IMPLEMENTATIONS,
                   norm_position=NORM_POSITIONS, init=INITS, kernels=KERNELS,
                   pooler_activation=POOLER_ACTIVATIONS)
    for key, allowed in choices.items():
      if getattr(self, key) not in allowed:
        self._bad(key, f'choose one of {", ".join(allowed)}')

  def _validate_sizes(self, vocabulary=True):
    for key in ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'd_ff'):
      if getattr(self, key) <= 0 and (vocabulary or key != 'vocab_size' or self.vocab_size):
        self._bad(key, 'must be a positive integer' + (
            '; set it, or leave 0 and let training take it from the tokenizer'
            if key == 'vocab_size' else ''))
    if self.head_dim == self.d_model // self.num_heads and self.d_model % self.num_heads:
      self._bad('num_heads', f'does not divide model.d_model={self.d_model}; '
                'change one, or set model.head_dim explicitly')
    zero_means = dict(num_decoder_layers='as many as model.num_layers',
                      max_len='no position table', type_vocab_size='no token types')
    for key, meaning in zero_means.items():
      if getattr(self, key) < 0:
        self._bad(key, f'must be non-negative; 0 means {meaning}')
    if self.head_dim <= 0:
      self._bad('head_dim', 'must be a positive integer; leave it 0 for '
                'model.d_model // model.num_heads')
    if self.num_kv_heads <= 0:
      self._bad('num_kv_heads', 'must be a positive integer; leave it 0 for model.num_heads '
                '(multi-head attention)')
    if self.num_classes < 1:
      self._bad('num_classes', 'a classifier needs at least 2 classes (1: a regression head)')

  def _validate_numbers(self):
    for key, ok, wanted in (('norm_eps', lambda v: v > 0, '> 0, e.g. 1e-6'),
                            ('init_std', lambda v: v > 0, '> 0, e.g. 0.02'),
                            ('rotary_base', lambda v: v > 0, '> 0, e.g. 10000')):
      if not (math.isfinite(getattr(self, key)) and ok(getattr(self, key))):
        self._bad(key, f'must be a finite number {wanted}; set it in model.{key}')
    for key in ('dropout_rate', 'attention_dropout_rate'):
      if not 0.0 <= getattr(self, key) < 1.0:
        self._bad(key, 'must be in [0, 1)')

  def _validate_combinations(self):
    if self.positions == 'relative' and self.relative_buckets < 4:
      self._bad('relative_buckets', 'T5 relative positions need at least 4 buckets; T5 uses 32')
    if self.positions == 'relative' and self.relative_max_distance <= self.relative_buckets // 2:
      self._bad('relative_max_distance', f'must be larger than model.relative_buckets // 2 = '
                f'{self.relative_buckets // 2}; T5 uses 128')
    if self.num_heads % self.num_kv_heads:
      self._bad('num_kv_heads', f'must divide model.num_heads={self.num_heads} '
                '(grouped-query attention)')
    if self.positions == 'rotary' and self.head_dim % 2:
      self._bad('head_dim', 'rotary positions need an even head dimension')
    if self.positions == 'learned' and self.max_len <= 0:
      self._bad('max_len', 'learned positions need a positive table size')
    if self.type_vocab_size and self.family != 'encoder':
      self._bad('type_vocab_size', 'token types are only used by encoder-only models; set it to 0')
    if self.num_decoder_layers and self.family != 'encoder_decoder':
      self._bad('num_decoder_layers', 'only encoder_decoder models have a separate decoder '
                'stack; use model.num_layers')
    if self.share_encoder_decoder and (self.family != 'encoder_decoder' or self.scan_layers or
                                       self.decoder_layers != self.num_layers):
      self._bad('share_encoder_decoder', 'needs model.family=encoder_decoder, '
                'model.scan_layers=False and as many decoder layers as encoder layers')
    if self.mup_base_width < 0:
      self._bad('mup_base_width', 'must be >= 0 (0: off; else the d_model the learning rate was '
                'tuned at, e.g. 64)')
    if self.mup_base_width and not self.scale_attention:
      self._bad('mup_base_width', 'muP scales the attention logits by 1/head_dim; set '
                'model.scale_attention=True or model.mup_base_width=0')
    if self.scale_tied_logits and not self.tie_embeddings:
      self._bad('scale_tied_logits', 'only applies with model.tie_embeddings=True')

  def _validate_image(self):
    """Image models (patch_size > 0): an encoder whose positions are the patch grid's."""
    if not self.patch_size:
      if self.positions == 'learned_2d':
        self._bad('positions', 'learned_2d is for image models; set model.patch_size, or use '
                  'learned positions')
      return
    if self.family != 'encoder':
      self._bad('family', 'image models (model.patch_size > 0) are encoders; set '
                'model.family=encoder')
    if self.positions != 'learned_2d':
      self._bad('positions', 'image models take a learned table over the patch grid; set '
                'model.positions=learned_2d')
    if self.patch_size < 0 or self.image_size % self.patch_size:
      self._bad('patch_size', f'must divide model.image_size={self.image_size}')
    if self.pooling not in POOLINGS:
      self._bad('pooling', f'choose one of {", ".join(POOLINGS)}')
    if self.num_channels <= 0:
      self._bad('num_channels', 'must be a positive integer (1 grey, 3 RGB)')
    for key in ('image_mean', 'image_std'):
      if len(getattr(self, key)) != self.num_channels:
        self._bad(key, f'needs one value per channel (model.num_channels={self.num_channels})')
    if not all(v > 0 for v in self.image_std):
      self._bad('image_std', 'every channel\'s std must be > 0')

