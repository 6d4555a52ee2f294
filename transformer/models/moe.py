"""Mixture-of-experts MLP (issue 27): a router picks `moe_top_k` of `moe_experts` expert MLPs
per token; optional shared experts see every token.

  router     float32 logits [B, L, E] (Switch's selective precision), softmax -> probabilities;
             the top-k experts of each token; gates: top-1 keeps its probability (Switch: the
             router learns through it), top-k > 1 renormalises over the chosen k (GShard, Mixtral)
  dispatch   moe_capacity_factor > 0: each row of the batch is a group with capacity
             C = ceil(factor * L * k / E) tokens per expert; a token's choices queue by rank
             (every first choice of the row before any second choice), then by position, and an
             assignment past C is dropped (its share of the output is 0; the residual carries
             the token). One-hot dispatch/combine einsums (GShard, Switch): with the expert
             dimension sharded ('expert' logical axis), XLA moves tokens between devices.
             moe_capacity_factor = 0: dropless: the assignments sorted by expert and run through
             jax.lax.ragged_dot (MegaBlocks' idea), every assignment computed.
  padding    tokens where `mask` is False (segment id 0) are routed nowhere: they take no
             capacity and count in no statistic; their output is 0.
  losses     Switch Transformer's load-balancing loss E * sum_i f_i * P_i (Fedus et al. 2021,
             eq. 4; f_i: share of the assignments routed to expert i before dropping, P_i: mean
             router probability of i) and ST-MoE's router z-loss mean(logsumexp(logits)^2)
             (Zoph et al. 2022, eq. 5), both over the real tokens. Their weights
             (model.moe_aux_loss 1e-2, model.moe_z_loss 1e-3: the papers' values) are applied by
             the trainer to the sum over MoE layers (`router_losses`).

Each call writes its layer's statistics into `stats` (a RouterStats variable, not a
parameter): the load of each expert, the aux loss, the z-loss, the dropped share. Under a scanned
stack they are stacked along the layers like every other variable; `router_losses(model)`
gathers them after the forward pass.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.models import layers

# stats vector of one layer: [load of each of E experts, aux, z, dropped share]
AUX, Z, DROPPED = -3, -2, -1


class RouterStats(nnx.Variable):
  """One MoE layer's routing statistics from its last call (see the module docstring)."""


def _expert_param(rngs, shape, axes, fan_in, hp, active):
  std = hp.std(None) or 1.0 / math.sqrt(fan_in)
  value = layers.normal(std)(rngs.params(), shape, hp.params_dtype)
  # active: the share of these weights one token uses (accounting's active parameters)
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False, active=active)


def capacity(length, hp):
  """Expert capacity of a group (a row) of `length` tokens: ceil(factor * length * k / E)."""
  return max(1, int(math.ceil(hp.moe_capacity_factor * length * hp.moe_top_k / hp.moe_experts)))


class MoE(nnx.Module):
  """The routed MLP of one layer: `router` (Dense embed -> expert), stacked expert weights
  `wi` (gated: `wi_0`, `wi_1`) [E, D, F] and `wo` [E, F, D], biases with use_bias, and the shared
  experts `shared` (one dense MLP of moe_shared_experts * d_ff) when there are any."""

  def __init__(self, hp, *, rngs: nnx.Rngs):
    e, d, f = hp.moe_experts, hp.d_model, hp.d_ff
    self.hp = hp
    self.gated = hp.activation in layers.GATED
    self.act = layers.activation_function(hp.activation, hp.kernels)
    self.router = layers.Dense((d,), (e,), ('embed', 'expert'), use_bias=False,
                               init_std=hp.std(None), dtype=jnp.float32,
                               param_dtype=hp.params_dtype, kernels=hp.kernels, rngs=rngs)
    active = hp.moe_top_k / e
    names = ('wi_0', 'wi_1') if self.gated else ('wi',)
    for name in names:
      setattr(self, name, _expert_param(rngs, (e, d, f), ('expert', 'embed', 'mlp'), d, hp,
                                        active))
    self.wo = _expert_param(rngs, (e, f, d), ('expert', 'mlp', 'embed'), f, hp, active)
    if hp.use_bias:
      zeros = lambda *shape: jnp.zeros(shape, hp.params_dtype)
      self.bi = nnx.Param(zeros(len(names), e, f), out_sharding=(None, 'expert', 'mlp'),
                          eager_sharding=False, active=active)
      self.bo = nnx.Param(zeros(e, d), out_sharding=('expert', 'embed'), eager_sharding=False,
                          active=active)
    self.shared = (layers.MLP(d, f * hp.moe_shared_experts, activation=hp.activation,
                              use_bias=hp.use_bias, dropout_rate=0.0, init_std=hp.std(None),
                              dtype=hp.compute_dtype, param_dtype=hp.params_dtype,
                              kernels=hp.kernels, rngs=rngs)
                   if hp.moe_shared_experts else None)
    self.dropout = nnx.Dropout(hp.dropout_rate if hp.mlp_dropout else 0.0, rngs=rngs)
    self.stats = RouterStats(jnp.zeros((e + 3,), jnp.float32))

  # -- routing ----------------------------------------------------------------------------
  def route(self, x_BLD, mask_BL):
    """(gates [B, L, K], experts [B, L, K] int32, router logits [B, L, E] float32)."""
    logits_BLE = self.router(x_BLD.astype(jnp.float32))
    probs_BLE = jax.nn.softmax(logits_BLE, axis=-1)
    gates_BLK, experts_BLK = jax.lax.top_k(probs_BLE, self.hp.moe_top_k)
    if self.hp.moe_top_k > 1:
      gates_BLK = gates_BLK / jnp.sum(gates_BLK, axis=-1, keepdims=True)
    return jnp.where(mask_BL[..., None], gates_BLK, 0.0), experts_BLK, logits_BLE

  def slots(self, experts_BLK, mask_BL, cap):
    """(each assignment's place in its expert's queue [B, L, K], kept [B, L, K]): the queue of
    a row holds every first choice by position, then every second choice, ..."""
    b, l, k = experts_BLK.shape
    onehot = jax.nn.one_hot(experts_BLK, self.hp.moe_experts, dtype=jnp.int32)
    onehot = onehot * mask_BL[..., None, None]
    by_rank = jnp.swapaxes(onehot, 1, 2).reshape(b, k * l, -1)   # [B, K*L, E], rank-major
    place = jnp.sum((jnp.cumsum(by_rank, axis=1) - 1) * by_rank, axis=-1)
    place_BLK = jnp.swapaxes(place.reshape(b, k, l), 1, 2)
    return place_BLK, mask_BL[..., None] & (place_BLK < cap)

  # -- the experts ------------------------------------------------------------------------
  def _bias(self, i, experts=None):
    """Bias `i` of wi (None: of wo) [E, 1, X] for the capacity layout [B, E, C, X], or taken
    per row of the sorted assignments `experts` [A] (dropless)."""
    if not self.hp.use_bias:
      return 0.0
    b = (self.bi.value[i] if i is not None else self.bo.value).astype(self.hp.compute_dtype)
    return b[:, None, :] if experts is None else jnp.take(b, experts, axis=0)

  def _hidden(self, dot, experts=None, deterministic=True):
    """act(x wi + b) (gated: act(x wi_0 + b0) * (x wi_1 + b1)), dropout; `dot(w)` is x . w."""
    dt = self.hp.compute_dtype
    if self.gated:
      h = (self.act(dot(self.wi_0.value.astype(dt)) + self._bias(0, experts)) *
           (dot(self.wi_1.value.astype(dt)) + self._bias(1, experts)))
    else:
      h = self.act(dot(self.wi.value.astype(dt)) + self._bias(0, experts))
    return self.dropout(h, deterministic=deterministic)

  def _capacity_experts(self, x_BLD, gates_BLK, experts_BLK, mask_BL, deterministic):
    cap = capacity(x_BLD.shape[1], self.hp)
    place_BLK, kept_BLK = self.slots(experts_BLK, mask_BL, cap)
    dt = self.hp.compute_dtype
    onehot_BLKE = jax.nn.one_hot(experts_BLK, self.hp.moe_experts, dtype=dt)
    slot_BLKC = jax.nn.one_hot(jnp.where(kept_BLK, place_BLK, cap), cap, dtype=dt)  # dropped: 0
    dispatch_BLEC = jnp.einsum('blke,blkc->blec', onehot_BLKE, slot_BLKC)
    combine_BLEC = jnp.einsum('blke,blkc->blec', onehot_BLKE * gates_BLK[..., None].astype(dt),
                              slot_BLKC)
    xe_BECD = jnp.einsum('blec,bld->becd', dispatch_BLEC, x_BLD.astype(dt))
    h_BECF = self._hidden(lambda w: jnp.einsum('becd,edf->becf', xe_BECD, w),
                          deterministic=deterministic)
    ye_BECD = jnp.einsum('becf,efd->becd', h_BECF, self.wo.value.astype(dt))
    if self.hp.use_bias:
      ye_BECD = ye_BECD + self._bias(None)
    y_BLD = jnp.einsum('blec,becd->bld', combine_BLEC, ye_BECD)
    dropped = jnp.sum(mask_BL[..., None] & ~kept_BLK)
    return y_BLD, dropped

  def _dropless_experts(self, x_BLD, gates_BLK, experts_BLK, mask_BL, deterministic):
    b, l, d = x_BLD.shape
    k, e = self.hp.moe_top_k, self.hp.moe_experts
    dt = self.hp.compute_dtype
    expert_A = jnp.where(mask_BL[..., None], experts_BLK, e).reshape(-1)   # padding: last
    order_A = jnp.argsort(expert_A, stable=True)
    sizes_E = jnp.bincount(expert_A, length=e + 1)[:e].astype(jnp.int32)
    xs_AD = jnp.take(x_BLD.reshape(b * l, d).astype(dt), order_A // k, axis=0)
    sorted_experts = jnp.take(expert_A, order_A)
    h_AF = self._hidden(lambda w: jax.lax.ragged_dot(xs_AD, w, sizes_E),
                        experts=jnp.minimum(sorted_experts, e - 1), deterministic=deterministic)
    ys_AD = jax.lax.ragged_dot(h_AF, self.wo.value.astype(dt), sizes_E)
    if self.hp.use_bias:
      ys_AD = ys_AD + self._bias(None, jnp.minimum(sorted_experts, e - 1))
    y_AD = jnp.zeros_like(ys_AD).at[order_A].set(ys_AD)
    y_BLKD = y_AD.reshape(b, l, k, d)
    y_BLD = jnp.einsum('blkd,blk->bld', y_BLKD, gates_BLK.astype(dt))
    return y_BLD, jnp.zeros((), jnp.int32)

  def __call__(self, x_BLD, *, mask=None, deterministic=True):
    mask_BL = jnp.ones(x_BLD.shape[:2], bool) if mask is None else mask.astype(bool)
    gates_BLK, experts_BLK, logits_BLE = self.route(x_BLD, mask_BL)
    run = (self._capacity_experts if self.hp.moe_capacity_factor > 0 else
           self._dropless_experts)
    y_BLD, dropped = run(x_BLD, gates_BLK, experts_BLK, mask_BL, deterministic)
    self.stats.value = self._statistics(logits_BLE, experts_BLK, mask_BL, dropped)
    if self.shared is not None:
      y_BLD = y_BLD + self.shared(x_BLD, deterministic=deterministic)
    return y_BLD.astype(self.hp.compute_dtype)

  def _statistics(self, logits_BLE, experts_BLK, mask_BL, dropped):
    """[load of each expert, aux loss, z-loss, dropped share] over the real tokens."""
    e, k = self.hp.moe_experts, self.hp.moe_top_k
    real = mask_BL.astype(jnp.float32)
    tokens = jnp.maximum(jnp.sum(real), 1.0)
    counts_E = jnp.einsum('blke,bl->e', jax.nn.one_hot(experts_BLK, e, dtype=jnp.float32), real)
    load_E = counts_E / (tokens * k)                             # f_i: sums to 1
    prob_E = jnp.einsum('ble,bl->e', jax.nn.softmax(logits_BLE, axis=-1), real) / tokens
    aux = e * jnp.sum(load_E * prob_E)
    z = jnp.sum(jnp.square(jax.nn.logsumexp(logits_BLE, axis=-1)) * real) / tokens
    dropped_share = dropped.astype(jnp.float32) / (tokens * k)
    return jnp.concatenate([load_E, jnp.stack([aux, z, dropped_share])]).astype(jnp.float32)


def router_losses(model):
  """(sum over MoE layers of the load-balancing loss, of the router z-loss, metrics) from the
  RouterStats the last forward pass wrote; metrics {name: (value, 1)}: 'moe/aux_loss',
  'moe/z_loss', 'moe/dropped' (mean over layers), 'moe/max_load' and 'moe/min_load' (the
  busiest and idlest expert of any layer, as a multiple of the uniform share 1/E), and
  'moe/load/<stack>/layer<i>/expert<e>' (each expert's share of its layer's assignments)."""
  period = scan_period(model.hp)
  flat = nnx.to_flat_state(nnx.state(model, RouterStats))
  aux = z = dropped = 0.0
  loads = {}
  for path, var in flat:
    stats = var.get_value()
    rows = stats.reshape(-1, stats.shape[-1])
    names = [str(p) for p in path]
    stack = names[0] if names[0] in ('encoder', 'decoder') else 'model'
    for r, layer in enumerate(_layers_of(names, rows.shape[0], period)):
      loads[(stack, layer)] = rows[r, :AUX]
    aux, z = aux + jnp.sum(rows[:, AUX]), z + jnp.sum(rows[:, Z])
    dropped = dropped + jnp.sum(rows[:, DROPPED])
  if not loads:
    return 0.0, 0.0, {}
  one = jnp.ones((), jnp.float32)
  e = next(iter(loads.values())).shape[0]
  every = jnp.stack(list(loads.values())) * e
  metrics = {'moe/aux_loss': (aux, one), 'moe/z_loss': (z, one),
             'moe/dropped': (dropped / len(loads), one),
             'moe/max_load': (jnp.max(every), one), 'moe/min_load': (jnp.min(every), one)}
  for (stack, layer), load in sorted(loads.items()):
    for i in range(e):
      metrics[f'moe/load/{stack}/layer{layer}/expert{i}'] = (load[i], one)
  return aux, z, metrics


def _layers_of(names, rows, period):
  """The layer index of each of `rows` stacked statistics at path `names` (see router_losses)."""
  at = names.index('layers')
  nxt = names[at + 1] if at + 1 < len(names) else ''
  if nxt.isdigit():                       # unrolled: layers/3/mlp/stats
    return [int(nxt)]
  if nxt == 'blocks':                     # scanned periods: layers/blocks/j/mlp/stats [n, ...]
    j = int(names[at + 2])
    return [r * period + j for r in range(rows)]
  return list(range(rows))                # scanned: layers/mlp/stats [layers, ...]


def scan_period(hp):
  """Layers per scanned unit: moe_every when a scanned stack interleaves dense and MoE MLPs
  (the unit holds one dense/MoE period), else 1."""
  return hp.moe_every if hp.scan_layers and hp.moe_experts and hp.moe_every > 1 else 1


def moe_layers(hp, num_layers):
  """Per layer of a stack, whether its MLP is a mixture of experts (every moe_every-th)."""
  return tuple(bool(hp.moe_experts) and (i + 1) % hp.moe_every == 0 for i in range(num_layers))

