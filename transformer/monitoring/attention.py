"""Attention at eval: the weights of every attention layer on a few rows, what each head does
(entropy, distance, near-uniform or near-one-hot) and the example drawn (pictures:
attention_plot.py; an image model's over its input image: image_attention.py).

  maps = capture(model, objective, rows)          # [AttentionMap], every layer of every kind
  scalars = diagnostic_scalars(maps)               # {'attention/entropy/layer0': 2.31, ...}
  picture = example(maps)                           # where the drawn example is, per map

Names: the layers of a one-stack model (encoder-only, decoder-only) are `layer{i}`; an
encoder-decoder has `encoder/layer{i}` (bidirectional self-attention), `decoder/layer{i}`
(causal self-attention) and `cross/layer{i}` (decoder queries over the encoder's outputs).

Statistics are means over the query positions that may attend to at least two keys (a query
with one allowed key has nothing to choose), pooled over the captured rows:
  entropy     -sum_j w_ij ln w_ij, in nats (ln n for a uniform spread over n keys)
  distance    sum_j w_ij |pos_i - pos_j|, in tokens, positions counted inside each packed
              example: how far back (causal) or either way a head looks; for cross-attention
              the distance from the diagonal (target position i reading source position i)
  near-uniform: mean entropy / ln(allowed keys) >= UNIFORM; near-one-hot: mean largest weight
  >= ONE_HOT.
"""

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.data import fields
from transformer.monitoring import image_attention
from transformer.models.attention import MultiHeadAttention
from transformer.objectives import losses

ROWS = 4            # eval rows the weights are captured on: a few keep it cheap
UNIFORM = 0.9       # a head is near-uniform when its normalised entropy is at least this
ONE_HOT = 0.9       # ... near-one-hot when its mean largest weight is at least this
MAX_LABELLED = 64   # examples up to this many tokens get their token strings on both axes


@dataclasses.dataclass
class AttentionMap:
  """The weights of one attention layer on the captured rows."""
  name: str              # 'layer0', 'encoder/layer0', 'decoder/layer1', 'cross/layer0'
  kind: str              # 'self' (bidirectional) | 'causal' | 'cross'
  stream_q: str          # the stack whose tokens are the queries: 'encoder' | 'decoder'
  stream_k: str          # ... and the keys
  weights: np.ndarray    # [B, N, T, S] float32
  mask: np.ndarray       # [B, T, S] bool: where query i may attend to key j


@functools.partial(nnx.jit, static_argnums=(2,))
def _forward(model, batch, objective):
  return objective.loss_and_metrics(model, batch, deterministic=True)[0]


def capture(model, objective, batch):
  """[AttentionMap] of every attention layer of `model` on `batch`, in stack and layer order.

  Runs the objective's own forward pass (compiled once per model structure) with weight capture
  switched on for this model instance only, so every family and objective is seen the same way.
  """
  attention = [m for _, m in nnx.iter_modules(model) if isinstance(m, MultiHeadAttention)]
  for m in attention:
    m.capture_weights = True
  try:
    _forward(model, {k: jnp.asarray(v) for k, v in batch.items()}, objective)
    captured = nnx.pop(model, nnx.Intermediate)
  finally:
    for m in attention:
      m.capture_weights = False
  sown = {}
  for path, var in nnx.to_flat_state(captured):
    value = var.get_value()
    sown.setdefault(tuple(map(str, path[:-1])), {})[str(path[-1])] = np.asarray(
        value[0] if isinstance(value, tuple) else value)   # sow keeps a tuple
  return _maps(sown)


def _maps(sown):
  """{module path: {'attention_weights', 'attention_mask'}} -> sorted [AttentionMap]."""
  stacks = {path[0] for path in sown}
  order = {'encoder': 0, 'decoder': 1, 'cross': 2}
  maps = []
  for path, values in sown.items():
    stack = path[0]
    kind = ('cross' if 'encoder_decoder_attention' in path else
            'causal' if stack == 'decoder' else 'self')
    group = 'cross' if kind == 'cross' else stack
    prefix = f'{group}/' if len(stacks) > 1 else ''
    weights, mask = values['attention_weights'], values['attention_mask'][..., 0, :, :]
    layer = next((int(p) for p in path if p.isdigit()), None)
    per_layer = ([(layer, weights, mask)] if layer is not None else   # scanned: [layers, ...]
                 [(i, weights[i], mask[i]) for i in range(weights.shape[0])])
    for i, w, m in per_layer:
      maps.append((order[group], i, AttentionMap(
          name=f'{prefix}layer{i}', kind=kind, stream_q=stack,
          stream_k='encoder' if kind == 'cross' else stack,
          weights=w.astype(np.float32), mask=m.astype(bool))))
  return [m for *_, m in sorted(maps, key=lambda x: x[:2])]


def head_stats(weights_BNTS, mask_BTS):
  """Per-head means [N] over queries with at least two allowed keys: 'entropy' (nats),
  'distance' (tokens), 'normalized_entropy' (entropy / ln allowed keys), 'max_weight'.

  NaN for every head when no query qualifies (e.g. all-padding rows).
  """
  w = np.where(mask_BTS[:, None], np.asarray(weights_BNTS, np.float64), 0.0)
  keys_BT = mask_BTS.sum(-1)
  valid_BT = keys_BT >= 2
  entropy = -np.sum(w * np.log(np.where(w > 0, w, 1.0)), axis=-1)          # [B, N, T]
  stats = {'entropy': entropy, 'distance': np.sum(w * _offsets(mask_BTS)[:, None], axis=-1),
           'normalized_entropy': entropy / np.log(np.maximum(keys_BT, 2))[:, None],
           'max_weight': w.max(axis=-1)}
  count = valid_BT.sum()
  weight_B1T = valid_BT[:, None, :]
  return {k: (np.sum(v * weight_B1T, axis=(0, 2)) / count if count else
              np.full(w.shape[1], np.nan)) for k, v in stats.items()}


def _offsets(mask_BTS):
  """|position of query i - position of key j| [B, T, S], positions counted inside each packed
  example: an example's queries are a run of rows sharing their first allowed key, its start."""
  b, t, s = mask_BTS.shape
  valid_BT = mask_BTS.any(-1)
  first_BT = np.argmax(mask_BTS, axis=-1)
  index_T = np.arange(t)
  new_BT = valid_BT & np.concatenate(
      [np.ones((b, 1), bool), (first_BT[:, 1:] != first_BT[:, :-1]) | ~valid_BT[:, :-1]], axis=1)
  start_BT = np.maximum.accumulate(np.where(new_BT, index_T, 0), axis=-1)
  q_pos_BT1 = (index_T - start_BT)[..., None]
  k_pos_BTS = np.arange(s)[None, None, :] - first_BT[..., None]
  return np.abs(q_pos_BT1 - k_pos_BTS)


def diagnostic_scalars(maps):
  """TensorBoard scalars of `maps`: per layer the mean over heads of entropy and distance
  (`attention/entropy/<name>`, `attention/distance/<name>`), per head the same under
  `attention_heads/.../<name>/head{h}`, and over every head of the model the share that is
  near-uniform (`attention/uniform_heads`) and near-one-hot (`attention/one_hot_heads`)."""
  out, uniform, one_hot, heads = {}, 0, 0, 0
  for m in maps:
    stats = head_stats(m.weights, m.mask)
    if not np.all(np.isfinite(stats['entropy'])):
      continue
    for key in ('entropy', 'distance'):
      out[f'attention/{key}/{m.name}'] = float(np.mean(stats[key]))
      out.update({f'attention_heads/{key}/{m.name}/head{h}': float(v)
                  for h, v in enumerate(stats[key])})
    uniform += int(np.sum(stats['normalized_entropy'] >= UNIFORM))
    one_hot += int(np.sum(stats['max_weight'] >= ONE_HOT))
    heads += len(stats['entropy'])
  if heads:
    out['attention/uniform_heads'] = uniform / heads
    out['attention/one_hot_heads'] = one_hot / heads
  return out


def _examples(mask_BTS):
  """[(row, query indices, key indices)] of each packed example of each row, in order.

  Queries of one example are those whose first allowed key is the same (the example's start
  in the key stream), whatever the kind of attention.
  """
  out = []
  for r in range(mask_BTS.shape[0]):
    valid = mask_BTS[r].any(-1)
    first = np.argmax(mask_BTS[r], axis=-1)
    for start in sorted(set(first[valid].tolist())):
      q = np.flatnonzero(valid & (first == start))
      out.append((r, q, np.flatnonzero(mask_BTS[r, q].any(0))))
  return out


def example(maps, max_labelled=MAX_LABELLED):
  """The example every picture shows, as [(row, query indices, key indices)] per map.

  The first packed example (row by row) that has 2..max_labelled tokens on both axes of every
  map, so its pictures carry token strings; else the first example of the first row.
  """
  per_map = [_examples(m.mask) for m in maps]
  count = min((len(e) for e in per_map), default=0)
  if not count:
    return None
  fits = lambda e: 2 <= len(e[1]) <= max_labelled and 2 <= len(e[2]) <= max_labelled
  chosen = next((j for j in range(count) if all(fits(e[j]) for e in per_map)), 0)
  return [e[chosen] for e in per_map]


def stack_tokens(batch, family, decoder_start_id=0):
  """The token ids each stack reads, {'encoder': [B, L], 'decoder': [B, L]}: an
  encoder-decoder's decoder reads its targets shifted right inside each packed example."""
  if family == 'encoder_decoder':
    shifted = losses.shift_right_in_segments(jnp.asarray(batch['targets']),
                                             jnp.asarray(batch['targets_segment_ids']),
                                             decoder_start_id)
    return {'encoder': np.asarray(batch['inputs']), 'decoder': np.asarray(shifted)}
  stream = 'targets' if 'targets' in batch else 'inputs'
  return {'encoder' if family == 'encoder' else 'decoder': np.asarray(batch[stream])}


def axis_labels(kind, tokenizer, ids):
  """The names on a picture's axis for positions `ids` of a sequence of `kind` (data/fields.py:
  text its token strings); None where the kind names none (the axis is numbered)."""
  return kind.labels(tokenizer, ids) if kind.labels else None


_KINDS = {'self': 'bidirectional self-attention', 'causal': 'causal self-attention',
          'cross': 'cross-attention (decoder queries, encoder keys)'}


def write_eval(writer, step, model, objective, batch, tokenizer, config):
  """At an eval: capture the first ROWS rows of `batch`, write the diagnostics
  (`log.attention_stats`) and a picture of every layer and head for one example
  (`log.attention_images`; token strings on both axes when it is short). What a position is
  and how an axis is labelled come from the objective's declared fields (data/fields.py)."""
  rows = {k: np.asarray(v)[:ROWS] for k, v in batch.items()}
  maps = capture(model, objective, rows)
  if config.log.attention_stats:
    writer.scalars(step, diagnostic_scalars(maps))
  if fields.sequence_kind(fields.declared(objective)) is fields.IMAGE:   # over the image itself
    if config.log.attention_images:
      image_attention.write_eval(writer, step, maps, rows, model.hp)
    return
  chosen = example(maps) if config.log.attention_images else None
  if not chosen:
    return
  tokens = stack_tokens(rows, config.model.family, config.model.decoder_start_id)
  kind = fields.sequence_kind(fields.declared(objective))
  unit = kind.units
  for m, (r, q, k) in zip(maps, chosen):
    weights_NQK = m.weights[r][:, q][:, :, k]
    stats = head_stats(weights_NQK[None], m.mask[r][q][:, k][None])
    labelled = max(len(q), len(k)) <= MAX_LABELLED
    labels = ((axis_labels(kind, tokenizer, tokens[m.stream_q][r, q]),
               axis_labels(kind, tokenizer, tokens[m.stream_k][r, k])) if labelled
              else (None, None))
    subtitles = [f'{_KINDS[m.kind]}, {len(q)} x {len(k)} {unit}\nthis example: entropy {e:.2f} '
                 f'nats, distance {d:.1f} {unit}' for e, d in zip(stats['entropy'],
                                                                stats['distance'])]
    choosing = m.mask[r][q][:, k].sum(-1) >= 2   # a query with one key has weight 1 on it
    vmax = weights_NQK[:, choosing].max(axis=(1, 2)) if choosing.any() else None
    writer.attention_images(step, m.name, weights_NQK, *labels, subtitles=subtitles, vmax=vmax)
