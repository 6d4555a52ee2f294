"""What a config builds, from shapes alone: parameters per module, FLOPs per token, activations.

  python -m transformer.summary --config configs/gpt2.py:small [--config.model.num_layers=4 ...]
  ./launch.sh summary --config configs/t5.py:v1_1_base

The model is built abstractly (`nnx.eval_shape`), so a 700M-parameter preset costs nothing to
summarise. The trainer reuses `count_params` (parameter counts in the logs), `flops_per_token`
(MFU) and `activation_bytes_per_token` (memory estimates).

Conventions:
  * "per token" means per position of the stream the model writes its output on (a token of
    text; `unit` names it from the objective's declared fields, e.g. a patch): the 'targets'
    stream for encoder-decoder models (the encoder's work on `data.seq_len` inputs is spread over
    `data.targets_len` targets), the only stream otherwise. `tokens_per_example` gives that length.
  * FLOPs count matmuls only (2 per multiply-add); norms, softmax and activations are left out.
    Attention scores (QK^T and AV) are counted over the whole key length, causal or not (as in
    Kaplan et al. 2020 and the PaLM MFU formula); a local layer (model.local_window w) counts
    the keys its window spans instead: w causal, 2w - 1 bidirectional, at most the key length
    (what a kernel that skips masked blocks, like splash's LocalMask, computes; the XLA path
    still forms and masks the whole [T, S] score matrix). Training = 3 x forward (backward = 2 x forward).
    The MLM head counts the positions it projects: max_predictions of a row (objectives/mlm.py).
    A mixture-of-experts layer counts active compute: the top-k experts and the shared ones a
    token runs, and the router (2 d E), not every expert (so compare matches on active FLOPs);
    the parameter counts give both 'total' and 'active'.
  * Activation memory follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models", sec. 4): the tensors each block keeps for its backward pass, in bytes of
    the compute dtype, 1 byte per dropout-mask element, and the [heads, key length] softmax
    output that a non-fused attention keeps (a fused cuDNN kernel keeps less). remat='full'
    keeps only each block's input; remat='dots' keeps the matmul outputs (q, k, v, QK^T, AV, the
    projections) and recomputes norms, activations and softmax.
"""

import numpy as np
from flax import nnx

from transformer.models import layers, moe
from transformer import models, objectives
from transformer.data import fields
from transformer.models.hparams import REMAT, HParams
from transformer.objectives import mlm

DTYPE_BYTES = {'float32': 4, 'bfloat16': 2, 'float16': 2}


def resolved_model_config(config):
  """config.model with vocab_size 0 replaced by data.vocab_size (as the trainer does), where
  the objective reads text (else the model has no vocabulary)."""
  model = config.model.copy_and_resolve_references()
  if not model.vocab_size and objectives.reads_text(config.objective):
    model.vocab_size = config.data.vocab_size
  return model


def hparams(config):
  """The validated HParams of the model the config builds."""
  return HParams.from_config(resolved_model_config(config),
                             vocabulary=objectives.reads_text(config.objective))


def head_for(config):
  """The head the objective declares ('lm' for a name it does not know)."""
  return getattr(objectives.REGISTRY.get(config.objective), 'head', 'lm')


def unit(config):
  """What one position of the model's sequence is, singular and plural: ('token', 'tokens') for
  text, ('patch', 'patches') for images."""
  kind = fields.sequence_kind(objectives.declared_fields(config.objective))
  return kind.unit, kind.units


def abstract_model(config):
  """The model the config builds, with jax.ShapeDtypeStruct leaves instead of arrays."""
  return nnx.eval_shape(lambda: models.build(hparams(config), head=head_for(config),
                                             rngs=nnx.Rngs(params=0, dropout=1)))


def _group(path):
  """Table row of one parameter path, e.g. ('decoder', 'layers', 3, 'mlp', 'wi', 'kernel')."""
  names = [p for p in path if isinstance(p, str)]
  top = names[0]
  if top in ('token_embed', 'token_type_embed'):
    return 'embeddings'
  if top in ('encoder', 'decoder') and len(names) > 1:
    part = names[1]
    if part == 'position_embedding':
      return 'embeddings'
    if part == 'relative_bias':
      return f'{top}/relative_bias'
    if part in ('embed_norm', 'final_norm'):
      return f'{top}/norms'
    if part == 'layers' and len(names) > 2:
      names = [n for n in names if n != 'blocks']   # a scanned dense/MoE period
      sub = names[2]
      if sub == 'mlp' and len(names) > 3 and names[3] == 'router':   # a mixture of experts
        return f'{top}/router'
      if sub == 'mlp' and len(names) == 4:   # its expert weights (a dense MLP's are mlp/wi/kernel)
        return f'{top}/experts'
      if sub == 'self_attention':
        return f'{top}/attention'
      if sub == 'encoder_decoder_attention':
        return f'{top}/cross_attention'
      if sub == 'mlp':
        return f'{top}/mlp'
      return f'{top}/norms'
  return 'head'  # lm_head, mlm_head, classifier


def count_params(abstract_state):
  """Parameter counts per module group, summed over layers, plus 'total' and 'non_embedding'.

  `abstract_state`: a model (abstract or real) or its nnx.State; only nnx.Param leaves count.
  Groups: 'embeddings' (token, token-type and learned position tables), '<stack>/attention',
  '<stack>/cross_attention', '<stack>/mlp', '<stack>/norms', '<stack>/relative_bias', 'head'.
  'non_embedding' = total - embeddings (Kaplan et al. 2020's N; an untied output projection and
  T5's tiny relative bias tables count as non-embedding). A mixture-of-experts model also has
  '<stack>/experts', '<stack>/router' and 'active': the parameters one token uses (total less
  the experts it is not routed to: a weight tagged active=k/E counts k/E of its size).
  """
  state = abstract_state
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  counts, idle = {}, 0.0
  for path, var in nnx.to_flat_state(state):
    if not isinstance(var, nnx.Param):
      continue
    group = _group(path)
    size = int(np.prod(var.get_value().shape))
    counts[group] = counts.get(group, 0) + size
    idle += size * (1 - var.get_metadata().get('active', 1.0))
  order = lambda g: (g != 'embeddings', g == 'head', g.startswith('decoder'), g)
  counts = {g: counts[g] for g in sorted(counts, key=order)}
  counts['total'] = sum(counts.values())
  counts['non_embedding'] = counts['total'] - counts.get('embeddings', 0)
  if idle:
    counts['active'] = counts['total'] - int(round(idle))
  return counts


def _stacks(config):
  """[(name, layers, tokens per example, self-attention key length, cross key length or 0)]."""
  hp = hparams(config)
  seq = config.data.seq_len
  if hp.family == 'encoder_decoder':
    tgt = config.data.targets_len or seq
    return hp, tgt, [('encoder', hp.num_layers, seq, seq, 0),
                     ('decoder', hp.decoder_layers, tgt, tgt, seq)]
  name = 'encoder' if hp.family == 'encoder' else 'decoder'
  return hp, seq, [(name, hp.num_layers, seq, seq, 0)]


def _keys_per_layer(hp, stack, num_layers, kv_len):
  """The keys one query's scores span, averaged over the stack's layers: the whole key length,
  or a local layer's window (w causal, 2w - 1 bidirectional, at most the key length)."""
  width = lambda w: min(kv_len, w if stack == 'decoder' else 2 * w - 1) if w else kv_len
  return sum(width(w) for w in hp.layer_windows(num_layers)) / num_layers


def _mlp_per_token(hp, num_layers, d, f_mats):
  """MLP FLOPs per token of a stack: dense layers 2 d f per matrix; a MoE layer the experts a
  token runs (top-k routed + shared) and its router (2 d E): active, not total, compute."""
  moe_layers = sum(moe.moe_layers(hp, num_layers))
  per_moe = 2 * d * f_mats * (hp.moe_top_k + hp.moe_shared_experts) + 2 * d * hp.moe_experts
  return (num_layers - moe_layers) * 2 * d * f_mats + moe_layers * per_moe


def flops_per_token(config):
  """Forward matmul FLOPs per output token (see the module docstring), split by kind.

  Keys: 'attention_projections' (q/k/v/out), 'attention_scores' (QK^T and AV), 'attention' (the
  two together), 'mlp' (a MoE layer's active experts and router), 'logits' (LM or classification head), 'total_forward', 'total_train'
  (3 x forward), 'train_6n' (Kaplan's 6N: 6 x the non-embedding weights each token multiplies,
  no attention scores or logits) and 'tokens_per_example'.
  """
  hp, out_tokens, stacks = _stacks(config)
  d, n, k, h, f = hp.d_model, hp.num_heads, hp.num_kv_heads, hp.head_dim, hp.d_ff
  mlp_mats = 3 if hp.activation in layers.GATED else 2
  proj = scores = mlp = 0
  for name, num_layers, tokens, kv_len, cross_len in stacks:
    per_token = 2 * d * (2 * n * h + 2 * k * h)
    per_token_scores = 4 * n * h * _keys_per_layer(hp, name, num_layers, kv_len)
    if cross_len:  # queries/outputs per decoder token; keys/values once per encoder token
      per_token += 2 * d * 2 * n * h
      per_token_scores += 4 * n * h * cross_len
      proj += num_layers * cross_len * 2 * d * 2 * k * h
    proj += num_layers * tokens * per_token
    scores += num_layers * tokens * per_token_scores
    mlp += tokens * _mlp_per_token(hp, num_layers, d, f * mlp_mats)
  if head_for(config) == 'classification':
    logits = 2 * d * hp.num_classes + (2 * d * d if hp.classifier_pooler else 0)
  else:
    logits = out_tokens * 2 * d * hp.vocab_size
    if hp.family == 'encoder' and hp.mlm_transform:
      logits += out_tokens * 2 * d * d
    if config.objective == 'mlm':   # the MLM head runs at the masked positions only
      logits *= mlm.max_predictions(config.data.mlm_probability, out_tokens) / out_tokens
  per = lambda x: x / out_tokens
  out = dict(attention_projections=per(proj), attention_scores=per(scores),
             attention=per(proj + scores), mlp=per(mlp), logits=per(logits))
  out['total_forward'] = out['attention'] + out['mlp'] + out['logits']
  out['total_train'] = 3 * out['total_forward']
  out['train_6n'] = 3 * (out['attention_projections'] + out['mlp'])
  out['tokens_per_example'] = out_tokens
  return out


FLOP_CONVENTIONS = {
    'matmul': '3 x forward matmuls, logits at every stream position',
    '6n': "6 x non-embedding weights (Kaplan et al. 2020's 6N)",
    '6n_attn': '6N + attention scores (PaLM appendix B: 6N + 12 L H Q T)',
}


def train_flops_per_token(config, convention='matmul', flops=None):
  """Training FLOPs per output token under a named convention (FLOP_CONVENTIONS):

    matmul    3 x (attention projections + attention scores + MLP + logits), 'total_train'
    6n        3 x (attention projections + MLP) = 6 x the non-embedding weights each token
              multiplies (no attention scores, no logits; norms and relative bias left out)
    6n_attn   6n + 3 x the attention scores (QK^T and AV over the whole key length)

  `flops`: flops_per_token(config) when already computed."""
  if convention not in FLOP_CONVENTIONS:
    raise ValueError(f'FLOP convention {convention!r}: choose one of {", ".join(FLOP_CONVENTIONS)}')
  f = flops or flops_per_token(config)
  six_n = 3 * (f['attention_projections'] + f['mlp'])
  return {'matmul': f['total_train'], '6n': six_n,
          '6n_attn': six_n + 3 * f['attention_scores']}[convention]


def _layer_bytes(hp, p, kv_len, cross_len, tokens_ratio, policy):
  """Bytes one block keeps per token for its backward pass (Korthikanti et al. 2022, sec. 4)."""
  d, n, k, h, f = hp.d_model, hp.num_heads, hp.num_kv_heads, hp.head_dim, hp.d_ff
  gated = hp.activation in layers.GATED
  drop, attn_drop = hp.dropout_rate > 0, hp.attention_dropout_rate > 0
  if policy == 'full':  # only the block input is saved; the block is recomputed
    return p * d
  if policy == 'dots':  # matmul outputs are saved, everything else recomputed
    def attention(q_len_kv):
      return p * (n * h + 2 * k * h + n * q_len_kv + n * h + d)  # q, k, v, QK^T, AV, out
    total = p * d + attention(kv_len) + p * (f * (2 if gated else 1) + d)
    if cross_len:
      total += attention(cross_len) - p * 2 * k * h + p * 2 * k * h * tokens_ratio
    return total

  def attention(kv, kv_per_token):
    b = p * d + p * n * h + p * kv_per_token + p * n * kv + p * n * h  # in, q, k+v, softmax, AV
    if attn_drop:
      b += n * kv + p * n * kv  # mask and dropped-out weights
    return b + (d if drop else 0)  # residual dropout mask
  total = attention(kv_len, 2 * k * h) + 2 * p * d  # two norm inputs
  if cross_len:
    total += attention(cross_len, 2 * k * h * tokens_ratio) + p * d
  total += p * d + p * f * (2 if gated else 1) + p * f  # MLP input, activation input(s), wo input
  total += ((f if hp.mlp_dropout else 0) + d) if drop else 0  # inner and residual dropout masks
  return total


def activation_bytes(config):
  """{policy: {stack: bytes per token per layer}} for every remat policy."""
  hp, out_tokens, stacks = _stacks(config)
  p = DTYPE_BYTES[hp.dtype]
  return {policy: {name: _layer_bytes(hp, p, kv, cross, cross / tokens if cross else 0, policy)
                   for name, _, tokens, kv, cross in stacks} for policy in REMAT}


def activation_bytes_per_token(config, remat=None):
  """Activation bytes kept per output token, summed over every layer of every stack.

  `remat` defaults to config.model.remat. Multiply by the tokens on one device (batch x length)
  for the activation memory of a training step (weights, grads and optimizer state not included).
  """
  hp, out_tokens, stacks = _stacks(config)
  policy = remat or hp.remat
  per_layer = activation_bytes(config)[policy]
  total = sum(per_layer[name] * num_layers * tokens
              for name, num_layers, tokens, _, _ in stacks)
  return int(round(total / out_tokens))


def _num(x):
  for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if abs(x) >= scale:
      return f'{x / scale:,.2f}{unit}'
  return f'{x:,.0f}'


def format_table(config, param_counts=None, flops=None, activations=None):
  """The summary as text: parameters, FLOPs per token and activation memory (computed if None)."""
  param_counts = param_counts or count_params(abstract_model(config))
  flops = flops or flops_per_token(config)
  activations = activations or activation_bytes(config)
  m = config.model
  lines = [f'{m.family} model, {head_for(config)} head, objective {config.objective}, '
           f'compute {m.dtype}, params {m.param_dtype}',
           '', f'{"parameters":<28}{"count":>16}{"share":>9}']
  total = param_counts['total']
  for group, n in param_counts.items():
    if group == 'total':
      lines.append('-' * 53)
    lines.append(f'{group:<28}{n:>16,}{100 * n / total:>8.1f}%')
  per, units = unit(config)
  lines += ['', f'FLOPs per {per} (forward, seq_len {config.data.seq_len}, '
            f'{flops["tokens_per_example"]} output {units} per example)']
  for key in ('attention_projections', 'attention_scores', 'mlp', 'logits', 'total_forward'):
    share = 100 * flops[key] / flops['total_forward']
    lines.append(f'  {key:<26}{_num(flops[key]):>16}{share:>8.1f}%')
  lines.append(f'  {"total_train (3x forward)":<26}{_num(flops["total_train"]):>16}')
  lines.append(f'  {"train_6n (Kaplan 6N)":<26}{_num(flops["train_6n"]):>16}')
  lines += ['', f'activation bytes per {per} per layer ({m.dtype}, Korthikanti et al. 2022)']
  for policy, stacks in activations.items():
    mark = '  <- model.remat' if policy == m.remat else ''
    layers_text = ', '.join(f'{name} {int(round(b)):,}' for name, b in stacks.items())
    whole = activation_bytes_per_token(config, policy)
    lines.append(f'  remat={policy:<6}{layers_text}   all layers: {whole:,} B/{per}{mark}')
  return '\n'.join(lines)
