"""Our parameter paths <-> Hugging Face tensor names: one table per family, read both ways.

A table is a tuple of Rules. `ours` is a pattern over our flat parameter paths in the unstacked
layout ('encoder/layers/3/mlp/wi/kernel'; `{i}` a layer, `{s}` the stack, encoder or decoder);
`hf` is the tensor's name under the family's base-model scope (BERT's 'bert.'), or, after a
leading '/', a top-level name (the heads). `kind` says how the array changes on the way:

  copy      the same array
  linear    torch nn.Linear weight [out, in] <-> our kernel [*in, *out] (`split` leading dims
            are the input: 2 for attention's out projection [heads, head_dim, d_model])
  conv1d    GPT-2's Conv1D weight [in, out] <-> our kernel (reshaped only)
  vector    a flat bias <-> ours per head [heads, head_dim]
  row       BART's final_logits_bias [1, vocab] <-> our LM-head bias [vocab]
  qkv0..2   a third of GPT-2's fused c_attn weight [d, 3d] or bias [3d]
  offset    BART's position table, whose first OFFSET rows precede position 0 (unused by the
            model: import keeps them aside, export puts them back)
  conv2d    ViT's patch projection, torch Conv2d weight [out, in, kh, kw] <-> our kernel
            [kh, kw, in, out] (the HWIO kernel of the same convolution)

`to_ours` walks every parameter of our model and reads its tensor; `to_hf` walks the same
parameters and writes each tensor back; both read the same rule, so an import followed by an
export gives every tensor back bit for bit. Conventions: the shapes of Hugging Face's tensors
are derived from ours, so a file that disagrees with its config.json fails with both shapes.
"""

import dataclasses
import re

import numpy as np

from transformer.errors import ConfigError

OFFSET = 2   # BART's learned position table starts at row 2 (fairseq padding legacy)


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str
  hf: str
  kind: str = 'copy'
  split: int = 1           # linear / conv1d: how many leading dims of our kernel are its input
  fallback: str = ''       # import: an older name of the same tensor


def _norm(ours, hf):
  return (Rule(f'{ours}/scale', f'{hf}.weight'), Rule(f'{ours}/bias', f'{hf}.bias'))


def _dense(ours, hf, split=1):
  return (Rule(f'{ours}/kernel', f'{hf}.weight', 'linear', split),
          Rule(f'{ours}/bias', f'{hf}.bias'))


def _attention(ours, names):
  """q, k, v, out nn.Linear projections (biases where the model has them)."""
  rules = []
  for part, name in zip(('query', 'key', 'value'), names):
    rules += [Rule(f'{ours}/{part}/kernel', f'{name}.weight', 'linear'),
              Rule(f'{ours}/{part}/bias', f'{name}.bias', 'vector')]
  return tuple(rules) + _dense(f'{ours}/out', names[3], split=2)


def _t5_mlp(ours, hf):
  return tuple(Rule(f'{ours}/mlp/{n}/kernel', f'{hf}.DenseReluDense.{n}.weight', 'linear')
               for n in ('wi', 'wi_0', 'wi_1')) + (
                   Rule(f'{ours}/mlp/wo/kernel', f'{hf}.DenseReluDense.wo.weight', 'linear'),)


BERT = (
    Rule('token_embed/embedding', 'embeddings.word_embeddings.weight'),
    Rule('encoder/position_embedding', 'embeddings.position_embeddings.weight'),
    Rule('token_type_embed/embedding', 'embeddings.token_type_embeddings.weight'),
    *_norm('encoder/embed_norm', 'embeddings.LayerNorm'),
    *_attention('encoder/layers/{i}/self_attention', [
        f'encoder.layer.{{i}}.attention.self.{n}' for n in ('query', 'key', 'value')] + [
            'encoder.layer.{i}.attention.output.dense']),
    *_norm('encoder/layers/{i}/attention_norm', 'encoder.layer.{i}.attention.output.LayerNorm'),
    *_dense('encoder/layers/{i}/mlp/wi', 'encoder.layer.{i}.intermediate.dense'),
    *_dense('encoder/layers/{i}/mlp/wo', 'encoder.layer.{i}.output.dense'),
    *_norm('encoder/layers/{i}/mlp_norm', 'encoder.layer.{i}.output.LayerNorm'),
    *_dense('mlm_head/transform', '/cls.predictions.transform.dense'),
    *_norm('mlm_head/transform_norm', '/cls.predictions.transform.LayerNorm'),
    Rule('mlm_head/lm/bias', '/cls.predictions.bias', fallback='/cls.predictions.decoder.bias'),
    Rule('mlm_head/lm/kernel/kernel', '/cls.predictions.decoder.weight', 'linear'),
    *_dense('classifier/pooler', 'pooler.dense'),
    *_dense('classifier/classifier', '/classifier'),
)

DISTILBERT = (
    Rule('token_embed/embedding', 'embeddings.word_embeddings.weight'),
    Rule('encoder/position_embedding', 'embeddings.position_embeddings.weight'),
    *_norm('encoder/embed_norm', 'embeddings.LayerNorm'),
    *_attention('encoder/layers/{i}/self_attention',
                [f'transformer.layer.{{i}}.attention.{n}_lin' for n in ('q', 'k', 'v', 'out')]),
    *_norm('encoder/layers/{i}/attention_norm', 'transformer.layer.{i}.sa_layer_norm'),
    *_dense('encoder/layers/{i}/mlp/wi', 'transformer.layer.{i}.ffn.lin1'),
    *_dense('encoder/layers/{i}/mlp/wo', 'transformer.layer.{i}.ffn.lin2'),
    *_norm('encoder/layers/{i}/mlp_norm', 'transformer.layer.{i}.output_layer_norm'),
    *_dense('mlm_head/transform', '/vocab_transform'),
    *_norm('mlm_head/transform_norm', '/vocab_layer_norm'),
    Rule('mlm_head/lm/bias', '/vocab_projector.bias'),
    Rule('mlm_head/lm/kernel/kernel', '/vocab_projector.weight', 'linear'),
    *_dense('classifier/pooler', '/pre_classifier'),
    *_dense('classifier/classifier', '/classifier'),
)

GPT2 = (
    Rule('token_embed/embedding', 'wte.weight'),
    Rule('decoder/position_embedding', 'wpe.weight'),
    *_norm('decoder/layers/{i}/attention_norm', 'h.{i}.ln_1'),
    *(Rule(f'decoder/layers/{{i}}/self_attention/{part}/{leaf}', f'h.{{i}}.attn.c_attn.{name}',
           f'qkv{p}') for p, part in enumerate(('query', 'key', 'value'))
      for leaf, name in (('kernel', 'weight'), ('bias', 'bias'))),
    Rule('decoder/layers/{i}/self_attention/out/kernel', 'h.{i}.attn.c_proj.weight', 'conv1d', 2),
    Rule('decoder/layers/{i}/self_attention/out/bias', 'h.{i}.attn.c_proj.bias'),
    *_norm('decoder/layers/{i}/mlp_norm', 'h.{i}.ln_2'),
    Rule('decoder/layers/{i}/mlp/wi/kernel', 'h.{i}.mlp.c_fc.weight', 'conv1d'),
    Rule('decoder/layers/{i}/mlp/wi/bias', 'h.{i}.mlp.c_fc.bias'),
    Rule('decoder/layers/{i}/mlp/wo/kernel', 'h.{i}.mlp.c_proj.weight', 'conv1d'),
    Rule('decoder/layers/{i}/mlp/wo/bias', 'h.{i}.mlp.c_proj.bias'),
    *_norm('decoder/final_norm', 'ln_f'),
    Rule('lm_head/kernel/kernel', '/lm_head.weight', 'linear'),
    Rule('classifier/classifier/kernel', '/score.weight', 'linear'),
)

BART = (
    Rule('token_embed/embedding', 'shared.weight', fallback='encoder.embed_tokens.weight'),
    Rule('{s}/position_embedding', '{s}.embed_positions.weight', 'offset'),
    *_norm('{s}/embed_norm', '{s}.layernorm_embedding'),
    *_attention('{s}/layers/{i}/self_attention',
                [f'{{s}}.layers.{{i}}.self_attn.{n}_proj' for n in ('q', 'k', 'v', 'out')]),
    *_norm('{s}/layers/{i}/attention_norm', '{s}.layers.{i}.self_attn_layer_norm'),
    *_attention('{s}/layers/{i}/encoder_decoder_attention',
                [f'{{s}}.layers.{{i}}.encoder_attn.{n}_proj' for n in ('q', 'k', 'v', 'out')]),
    *_norm('{s}/layers/{i}/cross_attention_norm', '{s}.layers.{i}.encoder_attn_layer_norm'),
    *_dense('{s}/layers/{i}/mlp/wi', '{s}.layers.{i}.fc1'),
    *_dense('{s}/layers/{i}/mlp/wo', '{s}.layers.{i}.fc2'),
    *_norm('{s}/layers/{i}/mlp_norm', '{s}.layers.{i}.final_layer_norm'),
    Rule('lm_head/bias', '/final_logits_bias', 'row'),
    Rule('lm_head/kernel/kernel', '/lm_head.weight', 'linear'),
)

T5 = (
    Rule('token_embed/embedding', 'shared.weight', fallback='encoder.embed_tokens.weight'),
    Rule('{s}/relative_bias/embedding',
         '{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'),
    *_attention('{s}/layers/{i}/self_attention',
                [f'{{s}}.block.{{i}}.layer.0.SelfAttention.{n}' for n in 'qkvo']),
    Rule('{s}/layers/{i}/attention_norm/scale', '{s}.block.{i}.layer.0.layer_norm.weight'),
    *_attention('decoder/layers/{i}/encoder_decoder_attention',
                [f'decoder.block.{{i}}.layer.1.EncDecAttention.{n}' for n in 'qkvo']),
    Rule('decoder/layers/{i}/cross_attention_norm/scale',
         'decoder.block.{i}.layer.1.layer_norm.weight'),
    *_t5_mlp('encoder/layers/{i}', 'encoder.block.{i}.layer.1'),
    Rule('encoder/layers/{i}/mlp_norm/scale', 'encoder.block.{i}.layer.1.layer_norm.weight'),
    *_t5_mlp('decoder/layers/{i}', 'decoder.block.{i}.layer.2'),
    Rule('decoder/layers/{i}/mlp_norm/scale', 'decoder.block.{i}.layer.2.layer_norm.weight'),
    Rule('{s}/final_norm/scale', '{s}.final_layer_norm.weight'),
    Rule('lm_head/kernel/kernel', '/lm_head.weight', 'linear'),
)


def _vit_layer(ours, hf, new):
  """One ViT layer's tensors as checkpoint files name them (`hf`); on import also the names of
  transformers 5's modules (`new`: q_proj, o_proj, mlp.fc1, ...), as a raw state_dict has them."""
  rules = []
  for part, name, now in (('query', 'attention.attention.query', 'attention.q_proj'),
                          ('key', 'attention.attention.key', 'attention.k_proj'),
                          ('value', 'attention.attention.value', 'attention.v_proj')):
    rules += [Rule(f'{ours}/self_attention/{part}/kernel', f'{hf}.{name}.weight', 'linear',
                   fallback=f'{new}.{now}.weight'),
              Rule(f'{ours}/self_attention/{part}/bias', f'{hf}.{name}.bias', 'vector',
                   fallback=f'{new}.{now}.bias')]
  pairs = (('self_attention/out', 'attention.output.dense', 'attention.o_proj', 2),
           ('mlp/wi', 'intermediate.dense', 'mlp.fc1', 1),
           ('mlp/wo', 'output.dense', 'mlp.fc2', 1))
  for part, name, now, split in pairs:
    rules += [Rule(f'{ours}/{part}/kernel', f'{hf}.{name}.weight', 'linear', split,
                   fallback=f'{new}.{now}.weight'),
              Rule(f'{ours}/{part}/bias', f'{hf}.{name}.bias', fallback=f'{new}.{now}.bias')]
  for norm, name in (('attention_norm', 'layernorm_before'), ('mlp_norm', 'layernorm_after')):
    rules += [Rule(f'{ours}/{norm}/scale', f'{hf}.{name}.weight', fallback=f'{new}.{name}.weight'),
              Rule(f'{ours}/{norm}/bias', f'{hf}.{name}.bias', fallback=f'{new}.{name}.bias')]
  return tuple(rules)


VIT = (
    Rule('token_embed/class_token', 'embeddings.cls_token', 'row'),
    Rule('token_embed/position_embedding', 'embeddings.position_embeddings', 'row'),
    Rule('token_embed/projection/kernel', 'embeddings.patch_embeddings.projection.weight',
         'conv2d', 3),
    Rule('token_embed/projection/bias', 'embeddings.patch_embeddings.projection.bias'),
    *_vit_layer('encoder/layers/{i}', 'encoder.layer.{i}', 'layers.{i}'),
    *_norm('encoder/final_norm', 'layernorm'),
    *_dense('classifier/pooler', 'pooler.dense'),
    *_dense('classifier/classifier', '/classifier'),
)

TABLES = {'bert': BERT, 'distilbert': DISTILBERT, 'gpt2': GPT2, 'bart': BART, 't5': T5, 'mt5': T5,
          'vit': VIT}
# Import: the optional heads of a Hugging Face file that our 'lm' model does not build, kept for
# a classification fine-tune (BERT's pooler, as BertForSequenceClassification starts from it;
# ViTModel's pooler and ViTForImageClassification's classifier).
OTHER_HEADS = {'bert': ('classifier/pooler/kernel', 'classifier/pooler/bias'),
               'vit': ('classifier/pooler/kernel', 'classifier/pooler/bias',
                       'classifier/classifier/kernel', 'classifier/classifier/bias')}


def _compile(rule):
  pattern = re.escape(rule.ours).replace(r'\{i\}', r'(?P<i>\d+)').replace(
      r'\{s\}', '(?P<s>encoder|decoder)')
  return re.compile(pattern + '$')


_COMPILED = {id(t): [(_compile(r), r) for r in t] for t in TABLES.values()}


def _find(arch, path):
  for index, (regex, rule) in enumerate(_COMPILED[id(TABLES[arch])]):
    match = regex.match(path)
    if match:
      return index, rule, rule.hf.format(**match.groupdict())
  return None


def _order(arch, path):
  """Layer by layer, each in table order (so a bad file reports the tensor a reader expects)."""
  found = _find(arch, path)
  return tuple(int(n) for n in re.findall(r'/(\d+)/', path)), found[0] if found else -1


def rule_for(arch, path):
  """(rule, the Hugging Face name without scope, top_level) of our parameter `path`."""
  found = _find(arch, path)
  if found:
    _, rule, name = found
    return rule, name.lstrip('/'), name.startswith('/')
  raise ConfigError(f'no tensor maps to our parameter {path}; this {arch} variant is not '
                    'supported')


def hf_shape(rule, shape):
  """The shape of the Hugging Face tensor that holds our parameter of `shape`."""
  n_in, n_out = int(np.prod(shape[:rule.split])), int(np.prod(shape[rule.split:]))
  kind = rule.kind
  if kind == 'linear':
    return (n_out, n_in)
  if kind == 'conv1d':
    return (n_in, n_out)
  if kind == 'vector':
    return (int(np.prod(shape)),)
  if kind == 'row':
    return (1,) + tuple(shape)
  if kind == 'offset':
    return (shape[0] + OFFSET,) + tuple(shape[1:])
  if kind == 'conv2d':
    return (shape[3], shape[2], shape[0], shape[1])
  if kind.startswith('qkv'):   # a kernel [d, heads, head_dim] or a bias [heads, head_dim]
    return (shape[0], 3 * n_out) if len(shape) == 3 else (3 * int(np.prod(shape)),)
  return tuple(shape)


def to_ours(rule, tensor, shape):
  """Our parameter of `shape` from the Hugging Face tensor (of hf_shape(rule, shape))."""
  kind = rule.kind
  if kind == 'linear':
    return tensor.T.reshape(shape)
  if kind.startswith('qkv'):
    part = int(kind[3:])
    width = tensor.shape[-1] // 3
    return tensor[..., part * width:(part + 1) * width].reshape(shape)
  if kind == 'offset':
    return tensor[OFFSET:]
  if kind == 'conv2d':
    return tensor.transpose(2, 3, 1, 0)
  return tensor.reshape(shape)


def to_hf(rule, value):
  """The Hugging Face tensor of our parameter `value` (qkv: this part's slice only; offset:
  without the rows before position 0)."""
  shape = hf_shape(rule, value.shape)
  if rule.kind == 'linear':
    return value.reshape(shape[::-1]).T
  if rule.kind.startswith('qkv'):
    return value.reshape(value.shape[:1] + (-1,) if value.ndim == 3 else (-1,))
  if rule.kind == 'offset':
    return value
  if rule.kind == 'conv2d':
    return value.transpose(3, 2, 0, 1)
  return value.reshape(shape)


def import_tensors(arch, weights, shapes):
  """{our path: array} for our parameters {path: shape}, read through `weights` (reader.Weights,
  which checks every shape and records what was used)."""
  out = {}
  for path in sorted(shapes, key=lambda p: _order(arch, p)):
    shape = shapes[path]
    rule, name, _ = rule_for(arch, path)
    fallback = rule.fallback.lstrip('/') or None
    tensor = weights.get(name, hf_shape(rule, shape), fallback=fallback)
    out[path] = to_ours(rule, np.asarray(tensor), shape)
  return out


def export_tensors(arch, params, prefix, extras=None):
  """{Hugging Face name: array} of our flat parameters {path: array}, names not starting with
  '/' under `prefix` (e.g. 'bert.'); `extras` holds the tensors an import kept aside."""
  out, fused = {}, {}
  for path, value in params.items():
    rule, name, top = rule_for(arch, path)
    value = np.asarray(value)
    if rule.kind.startswith('qkv'):
      fused.setdefault((name, top), {})[int(rule.kind[3:])] = to_hf(rule, value)
      continue
    tensor = to_hf(rule, value)
    if rule.kind == 'offset':
      kept = (extras or {}).get(name)
      if kept is None or kept.shape != (OFFSET,) + value.shape[1:]:
        kept = np.zeros((OFFSET,) + value.shape[1:], value.dtype)
      tensor = np.concatenate([kept.astype(value.dtype), value])
    out[(name, top)] = np.ascontiguousarray(tensor)
  for key, parts in fused.items():
    out[key] = np.concatenate([parts[p] for p in range(3)], axis=-1)
  return {(name if top else prefix + name): value for (name, top), value in out.items()}


def sinusoidal_table(n_pos, dim):
  """DistilBERT's sinusoidal_pos_embds table [n_pos, dim] as transformers fills it (float64 angles
  pos / 10000^(2 (j // 2) / dim), sin on even and cos on odd columns, then float32): the export
  writes it bit for bit, the import checks a file's table against it."""
  j = np.arange(dim)
  angles = np.arange(n_pos)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
  table = np.empty((n_pos, dim), np.float32)
  table[:, 0::2] = np.sin(angles[:, 0::2])
  table[:, 1::2] = np.cos(angles[:, 1::2])
  return table


def derived_tensors(arch, hp, prefix):
  """Tensors a Hugging Face file holds that our model computes instead: DistilBERT's sinusoidal
  position table, {name under `prefix`: array}."""
  if arch == 'distilbert' and hp.positions == 'sinusoidal':
    return {f'{prefix}embeddings.position_embeddings.weight': sinusoidal_table(hp.max_len,
                                                                               hp.d_model)}
  return {}


def kept_rows(arch, weights, shapes):
  """The tensors an import leaves out of our parameters but an export must give back: BART's
  position rows before position 0, {Hugging Face name: array}."""
  kept = {}
  for path, shape in shapes.items():
    rule, name, _ = rule_for(arch, path)
    if rule.kind == 'offset':
      kept[name] = np.asarray(weights.get(name, hf_shape(rule, shape)))[:OFFSET]
  return kept
