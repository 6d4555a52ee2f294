"""Which Hugging Face architecture expresses one of our models, and its config.json.

  arch, hf_class = architecture(hp, head)      # ('bert', 'BertForSequenceClassification')
  values = hf_config_json(arch, hf_class, hp, tokenizer)

Each family pins the knobs its Hugging Face model hard-codes (FIXED: BERT is post-norm with
learned positions; DistilBERT, which an encoder without token types exports as, the same with
eps 1e-12 and learned or sinusoidal positions; T5 pre-RMSNorm with relative bias, ...); a model
that sets one differently has no Hugging Face twin, and the export is refused with one line
naming the knob. The knobs that
config.json carries (sizes, activation, eps, dropout) are written from our values; hf_config.py
reads the same fields back, so import and export agree.
"""

from transformer.errors import ConfigError
from transformer.hf import vit

COMMON = dict(scale_tied_logits=False, scale_embeddings=False, scale_attention=True,
              embed_norm=False, num_kv_heads=None,   # None: must equal num_heads
              share_encoder_decoder=False,
              # the ablation knobs (models/knobs.py): none of the four classes has them
              qk_norm='none', attention_softcap=0.0, local_window=0, parallel_block=False,
              logit_softcap=0.0, moe_experts=0,
              mup_base_width=0)   # muP's output multiplier and 1/head_dim attention scale
FIXED = {
    'bert': dict(COMMON, norm='layernorm', norm_position='post', embed_norm=True,
                 final_norm=False, positions='learned', use_bias=True, lm_head_bias=True,
                 mlm_transform=True),
    'distilbert': dict(COMMON, norm='layernorm', norm_position='post', embed_norm=True,
                       final_norm=False, positions=None, use_bias=True, lm_head_bias=True,
                       mlm_transform=True, norm_eps=1e-12, type_vocab_size=0),
    'gpt2': dict(COMMON, norm='layernorm', norm_position='pre', final_norm=True,
                 positions='learned', use_bias=True, lm_head_bias=False),
    'bart': dict(COMMON, norm='layernorm', norm_position='post', embed_norm=True,
                 final_norm=False, positions='learned', use_bias=True, lm_head_bias=True,
                 norm_eps=1e-5, scale_embeddings=None),   # None here: any value
    't5': dict(COMMON, norm='rmsnorm', norm_position='pre', final_norm=True,
               positions='relative', use_bias=False, lm_head_bias=False, scale_attention=False,
               scale_tied_logits=None),
    'vit': dict(COMMON, norm='layernorm', norm_position='pre', final_norm=True,
                positions='learned_2d', use_bias=True, pooling='cls', type_vocab_size=0),
}
CLASSES = {('bert', 'lm'): 'BertForMaskedLM', ('bert', 'classification'):
           'BertForSequenceClassification', ('distilbert', 'lm'): 'DistilBertForMaskedLM',
           ('distilbert', 'classification'): 'DistilBertForSequenceClassification',
           ('gpt2', 'lm'): 'GPT2LMHeadModel',
           ('gpt2', 'classification'): 'GPT2ForSequenceClassification',
           ('bart', 'lm'): 'BartForConditionalGeneration',
           ('t5', 'lm'): 'T5ForConditionalGeneration',
           ('vit', 'lm'): 'ViTModel', ('vit', 'classification'): 'ViTForImageClassification'}
HEAD_FIXED = {('bert', 'classification'): dict(classifier_pooler=True, classifier_bias=True,
                                                pooler_activation='tanh'),
              ('distilbert', 'classification'): dict(classifier_pooler=True,
                                                      classifier_bias=True,
                                                      pooler_activation='relu'),
              ('gpt2', 'classification'): dict(classifier_pooler=False, classifier_bias=False),
              ('vit', 'classification'): dict(classifier_pooler=False, classifier_bias=True)}
SCOPES = {'bert': 'bert.', 'distilbert': 'distilbert.', 'gpt2': 'transformer.', 'bart': 'model.',
          't5': '', 'vit': 'vit.'}
ACTIVATION_NAMES = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new', 'relu': 'relu', 'silu': 'silu'}
T5_FEED_FORWARD = {**ACTIVATION_NAMES, 'geglu': 'gated-gelu', 'swiglu': 'gated-silu',
                   'reglu': 'gated-relu'}


def _refuse(hp, key, arch, want):
  raise ConfigError(f'`model.{key}={getattr(hp, key)!r}`: Hugging Face {arch.upper()} has '
                    f'{want}, so export-hf cannot express this model; only runs whose '
                    'architecture Hugging Face has (BERT, DistilBERT, GPT-2, BART, T5, ViT) export')


def architecture(hp, head):
  """(family, Hugging Face class) of our model `hp` with `head`; ConfigError naming the first
  knob no Hugging Face architecture has."""
  if hp.family == 'encoder_decoder':
    if hp.positions not in ('learned', 'relative'):
      _refuse(hp, 'positions', 'BART / T5', "learned (BART) or T5's relative positions")
    arch = 'bart' if hp.positions == 'learned' else 't5'
  elif hp.patch_size:            # an image model
    arch = 'vit'
  elif hp.family == 'encoder':   # DistilBERT: BERT without token types
    arch = 'bert' if hp.type_vocab_size else 'distilbert'
  else:
    arch = 'gpt2'
  if (arch, head) not in CLASSES:
    raise ConfigError(f'`objective=classification`: Hugging Face has no {arch} classifier '
                      'export here')
  for key, want in {**FIXED[arch], **HEAD_FIXED.get((arch, head), {})}.items():
    value = hp.num_heads if want is None and key == 'num_kv_heads' else want
    if value is not None and getattr(hp, key) != value:
      _refuse(hp, key, arch, f'{key}={value!r}')
  if arch == 't5' and hp.scale_tied_logits != hp.tie_embeddings:
    _refuse(hp, 'scale_tied_logits', arch, 'scaled logits exactly when its embeddings are tied '
            f'(model.tie_embeddings={hp.tie_embeddings})')
  if arch != 't5' and hp.head_dim * hp.num_heads != hp.d_model:
    _refuse(hp, 'head_dim', arch, 'head_dim * num_heads = d_model')
  names = T5_FEED_FORWARD if arch == 't5' else (
      {'gelu': 'gelu', 'gelu_tanh': 'gelu_new'} if arch == 'vit' else ACTIVATION_NAMES)
  if hp.activation not in names:
    _refuse(hp, 'activation', arch, f'one of {", ".join(sorted(names))}')
  if arch == 'distilbert' and hp.positions not in ('learned', 'sinusoidal'):
    _refuse(hp, 'positions', arch, "learned or sinusoidal positions (BERT's token types: "
            'model.type_vocab_size >= 1)')
  return arch, CLASSES[(arch, head)]


def _ids(tokenizer):
  pad = tokenizer.pad_id if getattr(tokenizer, 'has_pad', True) else None
  return dict(pad_token_id=pad, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)


def hf_config_json(arch, hf_class, hp, tokenizer):
  """The config.json of `hf_class` for our model `hp` (dtype: the parameter dtype)."""
  if arch == 'vit':   # an image model: no vocabulary, no tokenizer
    values = dict(architectures=[hf_class], model_type=arch, dtype=hp.param_dtype)
  else:
    values = dict(architectures=[hf_class], model_type=arch, vocab_size=hp.vocab_size,
                  tie_word_embeddings=hp.tie_embeddings, dtype=hp.param_dtype,
                  **_ids(tokenizer))
  values.update(_FAMILY[arch](hp))
  if hf_class.endswith(('SequenceClassification', 'ImageClassification')):
    values['id2label'] = {str(i): f'LABEL_{i}' for i in range(hp.num_classes)}
    values['label2id'] = {f'LABEL_{i}': i for i in range(hp.num_classes)}
  return values


def _bert(hp):
  return dict(hidden_size=hp.d_model, num_hidden_layers=hp.num_layers,
              num_attention_heads=hp.num_heads, intermediate_size=hp.d_ff,
              hidden_act=ACTIVATION_NAMES[hp.activation], max_position_embeddings=hp.max_len,
              type_vocab_size=hp.type_vocab_size, layer_norm_eps=hp.norm_eps,
              hidden_dropout_prob=hp.dropout_rate,
              attention_probs_dropout_prob=hp.attention_dropout_rate,
              position_embedding_type='absolute')


def _distilbert(hp):
  return dict(dim=hp.d_model, n_layers=hp.num_layers, n_heads=hp.num_heads, hidden_dim=hp.d_ff,
              activation=ACTIVATION_NAMES[hp.activation], max_position_embeddings=hp.max_len,
              sinusoidal_pos_embds=hp.positions == 'sinusoidal', dropout=hp.dropout_rate,
              attention_dropout=hp.attention_dropout_rate, seq_classif_dropout=hp.dropout_rate)


def _gpt2(hp):
  return dict(n_embd=hp.d_model, n_layer=hp.num_layers, n_head=hp.num_heads, n_inner=hp.d_ff,
              n_positions=hp.max_len, activation_function=ACTIVATION_NAMES[hp.activation],
              layer_norm_epsilon=hp.norm_eps, resid_pdrop=hp.dropout_rate,
              embd_pdrop=hp.dropout_rate, attn_pdrop=hp.attention_dropout_rate,
              scale_attn_weights=True)


def _bart(hp):
  return dict(d_model=hp.d_model, encoder_layers=hp.num_layers,
              decoder_layers=hp.decoder_layers, encoder_attention_heads=hp.num_heads,
              decoder_attention_heads=hp.num_heads, encoder_ffn_dim=hp.d_ff,
              decoder_ffn_dim=hp.d_ff, activation_function=ACTIVATION_NAMES[hp.activation],
              max_position_embeddings=hp.max_len, scale_embedding=hp.scale_embeddings,
              dropout=hp.dropout_rate, attention_dropout=hp.attention_dropout_rate,
              activation_dropout=hp.dropout_rate if hp.mlp_dropout else 0.0,
              decoder_start_token_id=hp.decoder_start_id, is_encoder_decoder=True)


def _t5(hp):
  return dict(d_model=hp.d_model, d_kv=hp.head_dim, d_ff=hp.d_ff, num_layers=hp.num_layers,
              num_decoder_layers=hp.decoder_layers, num_heads=hp.num_heads,
              relative_attention_num_buckets=hp.relative_buckets,
              relative_attention_max_distance=hp.relative_max_distance,
              dropout_rate=hp.dropout_rate, layer_norm_epsilon=hp.norm_eps,
              feed_forward_proj=T5_FEED_FORWARD[hp.activation],
              decoder_start_token_id=hp.decoder_start_id, is_encoder_decoder=True,
              scale_decoder_outputs=hp.tie_embeddings)


_FAMILY = {'bert': _bert, 'distilbert': _distilbert, 'gpt2': _gpt2, 'bart': _bart, 't5': _t5,
           'vit': vit.config_json}
