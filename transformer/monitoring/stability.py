"""Stability diagnostics computed inside the train step (`log.stability`), per layer:

  stability/max_attention_logit/<layer>  the largest scale * q.k over the allowed (query, key)
                                          pairs of the step's batch, before soft-cap and bias
  stability/query_norm/<layer>            mean L2 norm of a head's query vector (real tokens)
  stability/key_norm/<layer>              ... of a head's key vector
  stability/residual_rms/<layer>          RMS of the residual stream after the block
  stability/grad_norm/<group>             L2 norm of the gradient the optimizer gets
  stability/param_norm/<group>            L2 norm of the parameters before the update
  stability/update_ratio/<group>          RMS(update) / RMS(parameters): the step's relative change

The attention modules and blocks sow the first four in the forward pass the loss already runs
(models/attention.py `logit_stats`, models/blocks.py `residual_rms`; stopped gradients, so the
backward pass is unchanged); the others are reductions of the gradient, parameter and update trees
the step holds. They leave the step as metrics, each a (value, 1) pair, so the loop logs the mean
over the `train.log_every` window like every train metric. <layer> is `layer{i}`, or in an
encoder-decoder `encoder/layer{i}`, `decoder/layer{i}` and `cross/layer{i}` (the cross-attention's
statistics), as monitoring/attention.py names them; a scanned stack's sown values come stacked
[layers] and are split here. <group> is a layer (its block's parameters, cross-attention
included), or a top-level module outside the blocks: `token_embed`, `lm_head`, ..., and the stack
itself (`decoder`: its final norm and position table).

MAX_LOGIT: the run warns once when a logged max attention logit passes it. Kimi K2 (Kimi Team
2025, arXiv:2507.20534) clips every head whose max logit passes tau = 100 after their Muon runs
saw max logits pass 1000 and diverge; ViT-22B (Dehghani et al. 2023) traced its divergence to
attention logits growing until the attention was one-hot with near-zero entropy. At a logit gap
of 100 the softmax weight of the runner-up is e^-100 ~ 4e-44, below float32's smallest normal
number: the head is one-hot and its gradient through the softmax is gone.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.models.attention import MultiHeadAttention
from transformer.models.blocks import Block

MAX_LOGIT = 100.0
SOWN = {'max_logit': 'max_attention_logit', 'mean_query_norm': 'query_norm',
        'mean_key_norm': 'key_norm', 'residual_rms': 'residual_rms'}
PARAMETER_STATS = ('grad_norm', 'param_norm', 'update_ratio')
STATS = (*SOWN.values(), *PARAMETER_STATS)
_ONE = 1.0   # each step's value counts once in the window's mean
BLOCKS = 'layers'   # the stacks' module holding the blocks (models/blocks.py Stack.layers)


def enable(model):
  """Make every attention module and block of `model` sow its statistics."""
  for _, module in nnx.iter_modules(model):
    if isinstance(module, (MultiHeadAttention, Block)):
      module.stability = True


def _layer(names, stacks):
  """(group name, layer index or None for a scanned [layers] value) of a path inside a stack's
  blocks; None outside them."""
  if BLOCKS not in names[:-1] or names[0] not in stacks:
    return None
  after = names[names.index(BLOCKS) + 1]
  group = 'cross' if 'encoder_decoder_attention' in names else names[0]
  prefix = f'{group}/' if len(stacks) > 1 else ''
  return prefix, int(after) if after.isdigit() else None


def sown_scalars(intermediates, stacks):
  """{'stability/<stat>/<layer>': (value, 1)} from the nnx.Intermediate state the forward pass
  sowed (`nnx.pop(model, nnx.Intermediate)`); `stacks` the model's stack names ('decoder', ...).
  A value sown several times in one step (a model called twice) is reduced: max or mean."""
  out = {}
  for path, var in nnx.to_flat_state(intermediates):
    names = [str(p) for p in path]
    if names[-1] not in SOWN or _layer(names, stacks) is None:
      continue
    prefix, index = _layer(names, stacks)
    values = jnp.stack(var.get_value())
    value = jnp.max(values, 0) if names[-1] == 'max_logit' else jnp.mean(values, 0)
    per_layer = [(index, value)] if index is not None else list(enumerate(value))
    for i, v in per_layer:
      out[f'stability/{SOWN[names[-1]]}/{prefix}layer{i}'] = (v.astype(jnp.float32), _ONE)
  return out


def _groups_of_squares(tree, stacks):
  """{group: sum of squares} over the leaves of a params-shaped tree."""
  sums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(k, 'key', k)) for k in path]
    found = _layer(names, stacks)
    square = jnp.square(leaf.astype(jnp.float32))
    if found is None:
      parts = [(names[0], jnp.sum(square))]
    elif found[1] is not None:
      parts = [(f'{found[0]}layer{found[1]}', jnp.sum(square))]
    else:   # scanned: [layers, ...]
      per = jnp.sum(square.reshape(square.shape[0], -1), axis=1)
      parts = [(f'{found[0]}layer{i}', per[i]) for i in range(per.shape[0])]
    for group, value in parts:
      sums[group] = sums.get(group, 0.0) + value
  return sums


def parameter_scalars(grads, params, updates):
  """{'stability/<grad_norm|param_norm|update_ratio>/<group>': (value, 1)} of one step."""
  stacks = stack_names(params)
  g, p, u = (_groups_of_squares(t, stacks) for t in (grads, params, updates))
  out = {}
  for group in p:
    out[f'stability/grad_norm/{group}'] = (jnp.sqrt(g[group]), _ONE)
    out[f'stability/param_norm/{group}'] = (jnp.sqrt(p[group]), _ONE)
    out[f'stability/update_ratio/{group}'] = (jnp.sqrt(u[group] / jnp.maximum(p[group], 1e-30)),
                                              _ONE)
  return out


def stack_names(params):
  """The top-level modules of a params tree that hold blocks (`encoder`, `decoder`)."""
  return tuple(k for k, v in params.items() if isinstance(v, dict) and BLOCKS in v)


def layout():
  """The custom-scalars category: one chart per statistic, a line per layer (or group)."""
  return {f'{stat} per layer': ['Multiline', [rf'^stability/{stat}/.*$']] for stat in STATS}


def warning(scalars, step):
  """A one-line warning when a max attention logit among `scalars` passes MAX_LOGIT, else None."""
  logits = {tag.rsplit('max_attention_logit/', 1)[1]: v for tag, v in scalars.items()
            if tag.startswith('stability/max_attention_logit/') and math.isfinite(v)}
  if not logits or max(logits.values()) <= MAX_LOGIT:
    return None
  layer = max(logits, key=logits.get)
  return (f'warning: step {step}: the largest attention logit reached {logits[layer]:.4g} '
          f'({layer}), past {MAX_LOGIT:g} (log.stability): attention is turning one-hot, which '
          'preceded divergence in ViT-22B and Kimi K2; lower opt.learning_rate or set '
          'model.qk_norm=rmsnorm')
