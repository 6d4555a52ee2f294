"""Plan mode's core: compile a run's steps for devices this host may not have, read what they need.

  report = planning.plan(config, workdir, devices, chip)   # one configuration, one compile
  report.fits, report.total, report.collectives, report.roofline_s, report.mfu, ...

The step is the run's own: `setup.prepare(config, workdir, devices=...)` builds the same mesh,
rules, state layout and train step as training, the state is abstract (nothing is allocated,
`Trainer.abstract_state`) and one batch of the run's data pipeline gives the batch's shapes.

What comes from where:
  memory per chip   XLA's memory analysis of the compiled step (or, when the compiler refuses,
                    the temporaries its out-of-memory message names, plus the state)
  step FLOPs        monitoring/accounting (model FLOPs: 3 x forward matmuls, attention scores
                    included); XLA's cost analysis counts a scanned loop once, so it is not used
  bytes moved       an ESTIMATE from the same accounting: 3 x the weights a chip's matmuls read
                    (forward, backward, gradient), 2 x the chip's parameters + optimizer state (the
                    update reads and writes them), 2 x the activations kept for the backward
  roofline time     an ESTIMATE: max(FLOPs run per chip / peak, bytes per chip / HBM bandwidth),
                    a lower bound on the step time, where FLOPs run = the step FLOPs x 4/3 under
                    model.remat=full (the forward runs again in the backward); MFU = (step FLOPs
                    per chip / peak) / that time, an upper bound
  collectives       the compiled program's own, with loop trip counts (monitoring/compiled.py)
"""

import dataclasses
import math
import time
from typing import Any

import jax

from transformer.monitoring import accounting, compiled as compiled_lib
from transformer.training import setup, sharding

DTYPE_BYTES = accounting.DTYPE_BYTES


@dataclasses.dataclass
class Report:
  """What one configuration needs per chip (bytes, FLOPs, seconds) and whether it fits."""
  hbm: int                       # the chip's HBM
  state: int                     # parameters + optimizer state on the busiest chip
  memory: Any = None             # compiled.Memory of the train step (None when refused)
  refused: Any = None            # {'used', 'limit'} of the compiler's out-of-memory refusal
  flops: float = 0.0             # model FLOPs of one step, all chips
  recompute: float = 1.0         # FLOPs run / model FLOPs (4/3 under remat=full)
  chips: int = 1
  bytes_moved: float = 0.0       # HBM bytes per chip per step (estimate)
  peak: float = 0.0              # FLOP/s per chip
  bandwidth: float = 0.0         # HBM bytes/s per chip
  collectives: list = dataclasses.field(default_factory=list)
  compile_s: float = 0.0
  eval_total: Any = None         # the eval step's bytes per chip, when compiled
  mesh: Any = None
  attention: tuple = ('xla', '')   # the trainer's attention.choose

  @property
  def total(self):
    """Bytes per chip: the compiled step's, or a refused step's temporaries + its state."""
    if self.memory:
      return self.memory.total
    return self.refused.get('used') or self.refused['temp'] + self.state

  @property
  def temp(self):
    return self.memory.temp if self.memory else self.refused.get('temp')

  @property
  def fits(self):
    """Compiled, and within the chip's HBM where it is known."""
    return self.memory is not None and (not self.hbm or self.total <= self.hbm)

  @property
  def compute_s(self):
    return self.flops * self.recompute / self.chips / self.peak

  @property
  def memory_s(self):
    return self.bytes_moved / self.bandwidth if self.bandwidth else 0.0

  @property
  def roofline_s(self):
    return max(self.compute_s, self.memory_s)

  @property
  def mfu(self):
    return self.flops / self.chips / self.peak / self.roofline_s


def abstract_batch(run):
  """The train batch as ShapeDtypeStructs laid out as the step receives it (one real batch of
  the run's pipeline gives the shapes)."""
  first = next(run.pipeline('train').iterator(0))
  layout = run.trainer.input_sharding
  sharding.check_rows(first[next(iter(first))].shape[0], run.mesh, layout)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=layout) for k, v in first.items()}


def state_bytes(state):
  """Bytes of an abstract state on its busiest device."""
  per_device = {}
  for x in jax.tree.leaves(state):
    for device, index in x.sharding.devices_indices_map(x.shape).items():
      shape = [len(range(*i.indices(d))) for i, d in zip(index, x.shape)]
      per_device[device] = per_device.get(device, 0) + math.prod(shape) * x.dtype.itemsize
  return max(per_device.values(), default=0)


def bytes_moved(run, report):
  """The HBM bytes per chip per step of the module docstring's estimate."""
  config, mesh = run.config, run.mesh
  params = accounting.count_params(accounting.abstract_model(config))['total']
  weights = params * DTYPE_BYTES[config.model.dtype] / mesh.shape['tensor']
  tokens = config.train.batch_size * accounting.flops_per_token(config)['tokens_per_example']
  activations = accounting.activation_bytes_per_token(config) * tokens / report.chips
  return 3 * weights + 2 * report.state + 2 * activations


def plan(config, workdir, devices, chip, *, eval_step=False):
  """The Report of `config`'s train step (and eval step) compiled for `devices` of `chip`."""
  run = setup.prepare(config, workdir, devices=devices)
  state = run.trainer.abstract_state()
  batch = abstract_batch(run)
  flops = accounting.flops_per_token(run.config)
  report = Report(hbm=chip.hbm_bytes, state=state_bytes(state), chips=len(devices),
                  mesh=run.mesh, attention=run.trainer.attention,
                  flops=flops['total_train'] * flops['tokens_per_example'] *
                  run.config.train.batch_size,
                  peak=chip.peak_bf16, bandwidth=chip.hbm_bandwidth,
                  recompute=4 / 3 if run.config.model.remat == 'full' else 1.0)
  report.bytes_moved = bytes_moved(run, report)
  t0 = time.perf_counter()
  try:
    step = run.trainer.compile(state, batch)
  except Exception as e:  # pylint: disable=broad-except  # only the compiler's refusal is ours
    report.refused = compiled_lib.out_of_memory(str(e))
    if report.refused is None:
      raise
  report.compile_s = time.perf_counter() - t0
  if report.refused is None:
    report.memory = compiled_lib.memory(step)
    report.collectives = compiled_lib.collectives(step.as_text())
    if eval_step:
      report.eval_total = _eval_memory(run, state, batch)
  return report


def _eval_memory(run, state, batch):
  try:
    return compiled_lib.memory(run.trainer.compile_eval(state['params'], batch)).total
  except Exception as e:  # pylint: disable=broad-except
    refused = compiled_lib.out_of_memory(str(e))
    if refused is None:
      raise
    return refused['used']
