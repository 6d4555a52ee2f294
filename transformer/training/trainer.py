"""The functional core of training: sharded init, the jitted train and eval steps.

State is a plain pytree {'params', 'opt_state', 'step'} with params as a pure nested dict of
arrays, so orbax, optax and the sharding rules all see the same tree. The network is rebuilt
inside each step with `nnx.merge(graphdef, params, rng_state)`; dropout keys come from
(seed, step, micro-batch index when accumulating, module path), so a resumed run draws exactly
the keys an uninterrupted one would and no two micro-batches of a step share a dropout mask.
Batches are built in the layout the 'batch' sharding rule gives them (`input_sharding`), and
inside the steps every micro-batch is laid out as the rule says (`sharding.step_batch_sharding`).
With `log.stability` the train step also returns the per-layer diagnostics of
monitoring/stability.py among its metrics (sown in the forward pass it runs anyway).
"""

import contextlib
import dataclasses
import functools
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from transformer import models
from transformer.data import fields
from transformer.monitoring import stability as stability_lib
from transformer.models import attention, moe, splash

from transformer.training import optim

from transformer.training import sharding
from transformer.models.hparams import HParams


def _module_key(path, key, shape):
  """A different dropout key for every module (and every stacked layer), from one step key."""
  key = jax.random.fold_in(key, zlib.crc32(repr(path).encode()) & 0x7FFFFFFF)
  return jax.random.split(key, shape) if shape else key


def choose_attention(hp, config, mesh):
  """(backend, why) of model.attention_impl for this model on the mesh's devices: the lengths
  it attends over come from the data config, the platform from the mesh (plan mode's TPU)."""
  data = config.data
  lengths = (data.seq_len, data.targets_len or data.seq_len) if (
      hp.family == 'encoder_decoder') else (data.seq_len,)
  device = mesh.devices.flat[0]
  capability = tuple(int(x) for x in getattr(device, 'compute_capability', '0.0').split('.'))
  return attention.choose(hp.attention_impl, platform=device.platform, dtype=hp.dtype,
                          head_dim=hp.head_dim, lengths=lengths, capability=capability,
                          dropout=hp.attention_dropout_rate > 0,
                          bias=hp.positions if hp.positions in attention.BIAS_POSITIONS else False,
                          softcap=hp.attention_softcap > 0)


@dataclasses.dataclass
class Trainer:
  """Everything the steps close over; built once by `Trainer.create`."""
  hp: HParams
  objective: Any
  mesh: Any
  graphdef: Any
  rng_state: Any               # the model's non-Param state (dropout RNG streams), a pure dict
  tx: Any
  lr_fn: Any
  accumulation_steps: int
  seed: int
  param_shardings: Any
  build: Any                   # () -> nnx.split(model, nnx.Param, ...)
  batch_shardings: Any = None  # (micro-batch, whole batch) layouts in the steps ('batch' rule)
  state_shardings: Any = None
  sharding_table: str = ''     # every parameter's resolved sharding (printed by process 0)
  attention: tuple = ('xla', '')   # (backend, why): attention.choose, decided up front
  layout: Any = None           # {logical axis: mesh axes}: where splash's shard_map splits
  input_sharding: Any = None   # the layout batches are built in (sharding.input_sharding)
  stability: bool = False      # log.stability: per-layer diagnostics among the step's metrics
  frozen_placed: Any = None    # frozen_arrays(), once placed

  @classmethod
  def create(cls, config, objective, mesh, total_steps):
    text = fields.reads_text(fields.declared(objective))   # else: no vocabulary
    hp = HParams.from_config(config.model, vocabulary=text)
    impl, why = choose_attention(hp, config, mesh)
    hp = dataclasses.replace(hp, attention_impl=impl)
    seed = config.train.seed

    def build():
      model = models.build(hp, head=objective.head,
                           rngs=nnx.Rngs(params=seed, dropout=seed + 1))
      return nnx.split(model, nnx.Param, ...)
    graphdef, abs_params, _ = nnx.eval_shape(build)
    shardings = sharding.param_shardings(abs_params, mesh, config.mesh.preset,
                                         extra_rules=tuple(config.mesh.rules))
    tx, lr_fn = optim.make(config.opt, total_steps, mup_ratio=hp.mup_ratio)
    a, rows = config.opt.accumulation_steps, config.train.batch_size
    batch_shardings = (sharding.step_batch_sharding(mesh, config.mesh, rows // a, a),
                       sharding.step_batch_sharding(mesh, config.mesh, rows))
    trainer = cls(hp=hp, objective=objective, mesh=mesh, graphdef=graphdef, rng_state=None, tx=tx,
                  lr_fn=lr_fn, accumulation_steps=a, seed=seed,
                  param_shardings=nnx.to_pure_dict(shardings), build=build,
                  batch_shardings=batch_shardings, attention=(impl, why),
                  input_sharding=sharding.input_sharding(mesh, config.mesh, rows),
                  layout=dict(sharding.config_rules(config.mesh)),
                  sharding_table=sharding.sharding_table(abs_params, shardings),
                  stability=bool(config.log.get('stability', False)))
    return trainer

  # -- state -------------------------------------------------------------------------------
  def _init(self):
    _, params, rng_state = self.build()
    return nnx.to_pure_dict(params), nnx.to_pure_dict(rng_state)

  def init_state(self):
    """Initialise params straight into their shardings, then the optimizer state."""
    rep = sharding.replicated(self.mesh)
    init = self._init
    abs_rng = jax.eval_shape(init)[1]
    rng_shardings = jax.tree.map(lambda _: rep, abs_rng)
    params, self.rng_state = jax.jit(init, out_shardings=(self.param_shardings, rng_shardings))()
    return self.state_from_params(params)

  def state_from_params(self, params):
    opt_shardings = sharding.like_params(jax.eval_shape(self.tx.init, params),
                                         self.param_shardings, self.mesh)
    opt_state = jax.jit(self.tx.init, out_shardings=opt_shardings)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(self.mesh))
    state = {'params': params, 'opt_state': opt_state, 'step': step}
    self.state_shardings = jax.tree.map(lambda x: x.sharding, state)
    return state

  def abstract_state(self):
    """The state as ShapeDtypeStructs in its shardings, nothing allocated on the mesh's devices
    (plan mode compiles for devices this host does not have). The model's small RNG state is
    made on this host."""
    with jax.default_device(jax.local_devices(backend='cpu')[0]):
      self.rng_state = jax.device_get(jax.jit(lambda: self._init()[1])())
    shaped = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
    params = jax.tree.map(shaped, jax.eval_shape(lambda: self._init()[0]), self.param_shardings)
    abs_opt = jax.eval_shape(self.tx.init, params)
    opt = jax.tree.map(shaped, abs_opt,
                       sharding.like_params(abs_opt, self.param_shardings, self.mesh))
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(self.mesh))
    state = {'params': params, 'opt_state': opt, 'step': step}
    self.state_shardings = jax.tree.map(lambda x: x.sharding, state)
    return state

  @staticmethod
  def abstract(state):
    """ShapeDtypeStructs with the shardings of `state`: the restore target for checkpoints."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)

  def model(self, params):
    """A concrete nnx model holding `params` (for sampling and inspection)."""
    return nnx.merge(self.graphdef, params, self.rng_state)

  # -- steps -------------------------------------------------------------------------------
  def _laid_out(self, batch, micro):
    """`batch` constrained to the layout the 'batch' rule gives a micro-batch or a batch."""
    s = (self.batch_shardings or (None, None))[0 if micro else 1]
    return batch if s is None else jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, s), batch)

  def _splash_layout(self):
    """Splash attention's shard_map split (batch and heads as the rules place them)."""
    if self.attention[0] != 'splash' or self.layout is None:
      return contextlib.nullcontext()
    return splash.layout(self.mesh, self.layout['batch'], self.layout.get('heads'))

  def _loss(self, params, batch, step, micro=None):
    model = nnx.merge(self.graphdef, params, self.rng_state)
    key = jax.random.fold_in(jax.random.key(self.seed + 2), step)
    if micro is not None:  # micro-batch `micro` of an accumulated step: its own masks
      key = jax.random.fold_in(key, micro)
    batch = self._laid_out(batch, micro is not None)
    nnx.reseed(model, dropout=key, policy=_module_key)
    if self.stability:
      stability_lib.enable(model)
    with self._splash_layout():
      loss, metrics = self.objective.loss_and_metrics(model, batch, deterministic=False)
    if self.hp.moe_experts:   # the router losses of the forward pass (models/moe.py)
      aux, z, router_metrics = moe.router_losses(model)
      loss = loss + self.hp.moe_aux_loss * aux + self.hp.moe_z_loss * z
      metrics = {**metrics, **router_metrics}
    if self.stability:
      metrics = {**metrics, **stability_lib.sown_scalars(nnx.pop(model, nnx.Intermediate),
                                                         stability_lib.stack_names(params))}
    return loss * metrics['loss'][1], metrics  # summed loss: micro-batches weigh by tokens

  def frozen_arrays(self):
    """The objective's frozen arrays (Objective.frozen: a distillation teacher's parameters)
    placed on this mesh, replicated (every process holds them whole); {} for most objectives.
    Placed once."""
    if self.frozen_placed is None:
      rep = sharding.replicated(self.mesh)

      def place(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, rep, lambda index: host[index])
      self.frozen_placed = jax.tree.map(place, self.objective.frozen())
    return self.frozen_placed

  def _abstract_frozen(self):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        self.objective.frozen())

  def train_step(self, state, batch, frozen=None):
    """One optimizer update (accumulating gradients over micro-batches when asked). `frozen`:
    frozen_arrays() as an argument of the jitted step (None: the objective's own arrays, which
    jit then compiles in as constants)."""
    with self.objective.reading(frozen):
      return self._update(state, batch)

  def _update(self, state, batch):
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    params, step = state['params'], state['step']
    a = self.accumulation_steps
    if a == 1:
      (_, metrics), grads = grad_fn(params, batch, step)
    else:
      micro = jax.tree.map(lambda x: x.reshape((a, x.shape[0] // a) + x.shape[1:]), batch)

      def body(carry, i_mb):
        g_acc, m_acc = carry
        (_, m), g = grad_fn(params, i_mb[1], step, i_mb[0])
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, m_acc, m)), None
      zeros_g = jax.tree.map(jnp.zeros_like, params)
      first = jax.tree.map(lambda x: x[0], micro)
      m_shape = jax.eval_shape(lambda: grad_fn(params, first, step, 0)[0][1])
      zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)
      (grads, metrics), _ = jax.lax.scan(body, (zeros_g, zeros_m), (jnp.arange(a), micro))
    count = jnp.maximum(metrics['loss'][1], 1)
    grads = jax.tree.map(lambda g: g / count, grads)
    updates, opt_state = self.tx.update(grads, state['opt_state'], params)
    new_state = {'params': optax.apply_updates(params, updates), 'opt_state': opt_state,
                 'step': step + 1}
    metrics = dict(metrics)
    metrics['grad_norm'] = (optax.global_norm(grads), jnp.ones(()))
    metrics['learning_rate'] = (jnp.asarray(self.lr_fn(step), jnp.float32), jnp.ones(()))
    if self.stability:
      metrics.update(stability_lib.parameter_scalars(grads, params, updates))
    return new_state, metrics

  def eval_step(self, params, batch, frozen=None):
    model = nnx.merge(self.graphdef, params, self.rng_state)
    with self._splash_layout(), self.objective.reading(frozen):
      return self.objective.eval_metrics(model, self._laid_out(batch, False))

  def eval_fn(self):
    """jit(params, batch) -> metrics of one eval batch, the frozen arrays passed in."""
    return functools.partial(jax.jit(self.eval_step), frozen=self.frozen_arrays())

  def compile_eval(self, params, batch):
    """The eval step AOT-compiled for `params` and `batch` (arrays or ShapeDtypeStructs)."""
    step = jax.jit(self.eval_step, in_shardings=(
        self.state_shardings['params'], {k: v.sharding for k, v in batch.items()},
        sharding.replicated(self.mesh)))
    return step.lower(params, batch, self._abstract_frozen()).compile()

  def compile(self, state, batch):
    """AOT-compile the train step for this state and the layout `batch` arrives in (donating
    the state): step(state, batch), the frozen arrays bound (CompiledStep)."""
    batch_shardings = {k: v.sharding for k, v in batch.items()}
    step = jax.jit(self.train_step, in_shardings=(self.state_shardings, batch_shardings,
                                                  sharding.replicated(self.mesh)),
                   out_shardings=(self.state_shardings, None), donate_argnums=0)
    return CompiledStep(step.lower(state, batch, self._abstract_frozen()).compile(), self)


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """The compiled train step called as step(state, batch): it passes the trainer's frozen
  arrays; jax's Compiled is `compiled` (its memory_analysis, cost_analysis, as_text, ... are
  reachable on this object too)."""
  compiled: Any
  trainer: Any

  def __call__(self, state, batch):
    return self.compiled(state, batch, self.trainer.frozen_arrays())

  def __getattr__(self, name):
    return getattr(self.compiled, name)
