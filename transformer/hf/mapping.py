"""Hugging Face tensors -> our parameter paths, one small function per architecture.

Each function reads tensors through `reader.Weights` (which checks every shape against the one
config.json implies) and returns a flat {'encoder/layers/3/mlp/wi/kernel': array} dict in the
unstacked layout (one entry per layer); `load.py` stacks layers for scan_layers models.

Paths under OTHER_HEADS (BERT's pooler at 'classifier/pooler') belong to a head the imported
'lm' model does not build; `load.import_params` keeps them so that a classification fine-tune
(`init_from`) starts from the pretrained pooler, as BertForSequenceClassification does.

Conventions: torch nn.Linear weights are [out, in] and become kernels [in, out]; GPT-2's Conv1D
weights are already [in, out]. Attention kernels are split per head: query/key/value [D, N, H],
out [N, H, D].
"""

import numpy as np

from transformer.hf import hf_config
from transformer.hf.reader import Weights
from transformer.models.hparams import HParams


OTHER_HEADS = ('classifier/',)


class _Params(dict):
  """The flat output dict plus helpers for the patterns every architecture repeats."""

  def __init__(self, w: Weights, hp: HParams):
    super().__init__()
    self.w, self.hp = w, hp
    self.D, self.N, self.H = hp.d_model, hp.num_heads, hp.head_dim

  def linear(self, ours, name, n_in, n_out, *, bias=True, in_shape=None, out_shape=None):
    """nn.Linear `name` ([out, in]) -> `ours`/kernel in_shape + out_shape (+ bias out_shape)."""
    kernel = self.w.get(f'{name}.weight', (n_out, n_in)).T
    self[f'{ours}/kernel'] = kernel.reshape((in_shape or (n_in,)) + (out_shape or (n_out,)))
    if bias:
      self[f'{ours}/bias'] = self.w.get(f'{name}.bias', (n_out,)).reshape(out_shape or (n_out,))

  def attention(self, ours, names, *, bias=True):
    """Four nn.Linear projections named `names` (q, k, v, out) -> MultiHeadAttention `ours`."""
    D, N, H = self.D, self.N, self.H
    for part, name in zip(('query', 'key', 'value'), names[:3]):
      self.linear(f'{ours}/{part}', name, D, N * H, bias=bias, out_shape=(N, H))
    self.linear(f'{ours}/out', names[3], N * H, D, bias=bias, in_shape=(N, H))

  def norm(self, ours, name):
    self[f'{ours}/scale'] = self.w.get(f'{name}.weight', (self.D,))
    if self.hp.norm == 'layernorm':
      self[f'{ours}/bias'] = self.w.get(f'{name}.bias', (self.D,))

  def untied_head(self, ours, name='lm_head.weight', scale=1.0):
    self[f'{ours}/kernel/kernel'] = self.w.get(name, (self.hp.vocab_size, self.D)).T * scale


def bert(w: Weights, hp: HParams, c) -> dict:
  del c
  p = _Params(w, hp)
  D, F, V = hp.d_model, hp.d_ff, hp.vocab_size
  p['token_embed/embedding'] = w.get('embeddings.word_embeddings.weight', (V, D))
  p['encoder/position_embedding'] = w.get('embeddings.position_embeddings.weight',
                                          (hp.max_len, D))
  if hp.type_vocab_size:
    p['token_type_embed/embedding'] = w.get('embeddings.token_type_embeddings.weight',
                                            (hp.type_vocab_size, D))
  p.norm('encoder/embed_norm', 'embeddings.LayerNorm')
  for i in range(hp.num_layers):
    ours, hf = f'encoder/layers/{i}', f'encoder.layer.{i}'
    p.attention(f'{ours}/self_attention', [f'{hf}.attention.self.{n}' for n in (
        'query', 'key', 'value')] + [f'{hf}.attention.output.dense'])
    p.norm(f'{ours}/attention_norm', f'{hf}.attention.output.LayerNorm')
    p.linear(f'{ours}/mlp/wi', f'{hf}.intermediate.dense', D, F)
    p.linear(f'{ours}/mlp/wo', f'{hf}.output.dense', F, D)
    p.norm(f'{ours}/mlp_norm', f'{hf}.output.LayerNorm')
  if w.has('pooler.dense.weight'):   # BertModel / BertForPreTraining files: the pretrained pooler
    p.linear('classifier/pooler', 'pooler.dense', D, D)
  p.linear('mlm_head/transform', 'cls.predictions.transform.dense', D, D)
  p.norm('mlm_head/transform_norm', 'cls.predictions.transform.LayerNorm')
  p['mlm_head/lm/bias'] = w.get('cls.predictions.bias', (V,),
                                fallback='cls.predictions.decoder.bias')
  if not hp.tie_embeddings:
    p.untied_head('mlm_head/lm', 'cls.predictions.decoder.weight')
  return p


def gpt2(w: Weights, hp: HParams, c) -> dict:
  del c
  p = _Params(w, hp)
  D, N, H, F, V = hp.d_model, hp.num_heads, hp.head_dim, hp.d_ff, hp.vocab_size
  p['token_embed/embedding'] = w.get('wte.weight', (V, D))
  p['decoder/position_embedding'] = w.get('wpe.weight', (hp.max_len, D))
  for i in range(hp.num_layers):
    ours, hf = f'decoder/layers/{i}', f'h.{i}'
    p.norm(f'{ours}/attention_norm', f'{hf}.ln_1')
    qkv = w.get(f'{hf}.attn.c_attn.weight', (D, 3 * D))  # Conv1D: [in, out]
    qkv_bias = w.get(f'{hf}.attn.c_attn.bias', (3 * D,))
    for part, kernel, bias in zip(('query', 'key', 'value'), np.split(qkv, 3, axis=1),
                                  np.split(qkv_bias, 3)):
      p[f'{ours}/self_attention/{part}/kernel'] = kernel.reshape(D, N, H)
      p[f'{ours}/self_attention/{part}/bias'] = bias.reshape(N, H)
    p[f'{ours}/self_attention/out/kernel'] = w.get(f'{hf}.attn.c_proj.weight',
                                                   (D, D)).reshape(N, H, D)
    p[f'{ours}/self_attention/out/bias'] = w.get(f'{hf}.attn.c_proj.bias', (D,))
    p.norm(f'{ours}/mlp_norm', f'{hf}.ln_2')
    p[f'{ours}/mlp/wi/kernel'] = w.get(f'{hf}.mlp.c_fc.weight', (D, F))
    p[f'{ours}/mlp/wi/bias'] = w.get(f'{hf}.mlp.c_fc.bias', (F,))
    p[f'{ours}/mlp/wo/kernel'] = w.get(f'{hf}.mlp.c_proj.weight', (F, D))
    p[f'{ours}/mlp/wo/bias'] = w.get(f'{hf}.mlp.c_proj.bias', (D,))
  p.norm('decoder/final_norm', 'ln_f')
  if not hp.tie_embeddings:
    p.untied_head('lm_head')
  return p


BART_POSITION_OFFSET = 2  # BART's learned position table starts at row 2 (fairseq padding legacy)


def bart(w: Weights, hp: HParams, c) -> dict:
  del c
  p = _Params(w, hp)
  D, F, V = hp.d_model, hp.d_ff, hp.vocab_size
  p['token_embed/embedding'] = w.get('shared.weight', (V, D), fallback='encoder.embed_tokens.weight')
  for stack, num_layers in (('encoder', hp.num_layers), ('decoder', hp.decoder_layers)):
    table = w.get(f'{stack}.embed_positions.weight', (hp.max_len + BART_POSITION_OFFSET, D))
    p[f'{stack}/position_embedding'] = table[BART_POSITION_OFFSET:]
    p.norm(f'{stack}/embed_norm', f'{stack}.layernorm_embedding')
    for i in range(num_layers):
      ours, hf = f'{stack}/layers/{i}', f'{stack}.layers.{i}'
      projections = lambda name: [f'{hf}.{name}.{n}_proj' for n in ('q', 'k', 'v', 'out')]
      p.attention(f'{ours}/self_attention', projections('self_attn'))
      p.norm(f'{ours}/attention_norm', f'{hf}.self_attn_layer_norm')
      if stack == 'decoder':
        p.attention(f'{ours}/encoder_decoder_attention', projections('encoder_attn'))
        p.norm(f'{ours}/cross_attention_norm', f'{hf}.encoder_attn_layer_norm')
      p.linear(f'{ours}/mlp/wi', f'{hf}.fc1', D, F)
      p.linear(f'{ours}/mlp/wo', f'{hf}.fc2', F, D)
      p.norm(f'{ours}/mlp_norm', f'{hf}.final_layer_norm')
  p['lm_head/bias'] = w.get('final_logits_bias', (1, V))[0]
  if not hp.tie_embeddings:
    p.untied_head('lm_head')
  return p


def t5(w: Weights, hp: HParams, c) -> dict:
  p = _Params(w, hp)
  D, F, V = hp.d_model, hp.d_ff, hp.vocab_size
  p['token_embed/embedding'] = w.get('shared.weight', (V, D), fallback='encoder.embed_tokens.weight')
  for stack, num_layers in (('encoder', hp.num_layers), ('decoder', hp.decoder_layers)):
    p[f'{stack}/relative_bias/embedding'] = w.get(
        f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
        (hp.relative_buckets, hp.num_heads))
    for i in range(num_layers):
      ours, hf = f'{stack}/layers/{i}', f'{stack}.block.{i}.layer'
      p.attention(f'{ours}/self_attention',
                  [f'{hf}.0.SelfAttention.{n}' for n in 'qkvo'], bias=False)
      p.norm(f'{ours}/attention_norm', f'{hf}.0.layer_norm')
      mlp = 1
      if stack == 'decoder':
        p.attention(f'{ours}/encoder_decoder_attention',
                    [f'{hf}.1.EncDecAttention.{n}' for n in 'qkvo'], bias=False)
        p.norm(f'{ours}/cross_attention_norm', f'{hf}.1.layer_norm')
        mlp = 2
      ff = f'{hf}.{mlp}.DenseReluDense'
      for name in (('wi_0', 'wi_1') if hp.activation in hf_config.GATED.values() else ('wi',)):
        p.linear(f'{ours}/mlp/{name}', f'{ff}.{name}', D, F, bias=False)
      p.linear(f'{ours}/mlp/wo', f'{ff}.wo', F, D, bias=False)
      p.norm(f'{ours}/mlp_norm', f'{hf}.{mlp}.layer_norm')
    p.norm(f'{stack}/final_norm', f'{stack}.final_layer_norm')
  if not hp.tie_embeddings:
    _, scaled = hf_config.t5_head(c, w)  # a scaled untied head: fold d_model**-0.5 into it
    p.untied_head('lm_head', scale=D ** -0.5 if scaled else 1.0)
  return p


MAPPINGS = {'bert': bert, 'gpt2': gpt2, 'bart': bart, 't5': t5, 'mt5': t5}
