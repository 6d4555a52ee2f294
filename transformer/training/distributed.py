"""Multi-process start-up: `jax.distributed.initialize` from what the environment says.

Call `initialize()` before anything touches a jax device. It recognises, in this order:

1. Explicit variables (set by `launch.sh --num_processes N`, or by any launcher of your own):
     TRANSFORMER_COORDINATOR=host:port  TRANSFORMER_NUM_PROCESSES=N  TRANSFORMER_PROCESS_ID=i
   and optionally TRANSFORMER_LOCAL_DEVICE_IDS=0,1 (the accelerators this process drives).
2. SLURM inside `srun` (SLURM_JOB_ID, SLURM_PROCID, SLURM_NTASKS, ...): jax derives the
   coordinator from the node list. With one task per GPU each process drives GPU $SLURM_LOCALID;
   with one task per node it drives every GPU of the node.
3. Cloud TPU VMs (or TRANSFORMER_DISTRIBUTED=auto anywhere): jax detects hosts and ids itself.
Otherwise it does nothing: one process, all local devices.

Failure detection is bounded so a dead peer stops the others instead of hanging them:
TRANSFORMER_HEARTBEAT_TIMEOUT (seconds a process may go silent before the job is failed,
default 60), TRANSFORMER_INIT_TIMEOUT (seconds to wait for every process to join, default 300).
On CPU, cross-process collectives go through gloo.
"""

import glob
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from transformer.errors import ConfigError

EXPLICIT = ('TRANSFORMER_COORDINATOR', 'TRANSFORMER_NUM_PROCESSES', 'TRANSFORMER_PROCESS_ID')
_SLURM = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')


def _int(env, key):
  try:
    return int(env[key])
  except ValueError:
    raise ConfigError(f'environment variable {key}={env[key]!r} must be an integer') from None


def _seconds(env, key, default):
  if not env.get(key):
    return default
  value = _int(env, key)
  if value <= 0:
    raise ConfigError(f'environment variable {key}={value} must be a positive number of seconds')
  return value


def _ids(env, key):
  try:
    return [int(i) for i in env[key].split(',') if i.strip()]
  except ValueError:
    raise ConfigError(f'environment variable {key}={env[key]!r} must be a comma-separated list '
                      'of device numbers, e.g. 0,1') from None


def _on_tpu_vm():
  return bool(glob.glob('/dev/accel[0-9]*') or glob.glob('/dev/vfio/[0-9]*'))


def _slurm_local_devices(env):
  """The GPUs this SLURM task drives (None: let jax pick GPU $SLURM_LOCALID).

  One task per node: every GPU of the node. Several tasks per node: GPU $SLURM_LOCALID, unless
  SLURM bound one GPU to each task (--gpus-per-task=1), which the task then sees as GPU 0.
  """
  tasks = _int(env, 'SLURM_NTASKS')
  nodes = int(env.get('SLURM_STEP_NUM_NODES') or env.get('SLURM_NNODES') or tasks)
  visible = [v for v in env.get('CUDA_VISIBLE_DEVICES', '').split(',') if v.strip()]
  if tasks != nodes:
    return [0] if len(visible) == 1 else None
  if env.get('SLURM_GPUS_ON_NODE'):
    return list(range(_int(env, 'SLURM_GPUS_ON_NODE')))
  return list(range(len(visible))) if visible else None


def plan(env=None):
  """The keyword arguments for `jax.distributed.initialize`, or None for a single process.

  Pure (reads only `env`), so every launcher's case is testable without starting anything.
  """
  env = os.environ if env is None else env
  timeouts = {'heartbeat_timeout_seconds': _seconds(env, 'TRANSFORMER_HEARTBEAT_TIMEOUT', 60),
              'initialization_timeout': _seconds(env, 'TRANSFORMER_INIT_TIMEOUT', 300)}
  given = [k for k in EXPLICIT if env.get(k)]
  if given:
    if len(given) != len(EXPLICIT):
      missing = sorted(set(EXPLICIT) - set(given))
      raise ConfigError(f'environment sets {", ".join(given)} but not {", ".join(missing)}; '
                        'set all three (launch.sh --num_processes N does)')
    n, i = _int(env, 'TRANSFORMER_NUM_PROCESSES'), _int(env, 'TRANSFORMER_PROCESS_ID')
    if not 0 <= i < n:
      raise ConfigError(f'TRANSFORMER_PROCESS_ID={i} must be in [0, TRANSFORMER_NUM_PROCESSES={n})')
    if n == 1:
      return None
    kwargs = dict(coordinator_address=env['TRANSFORMER_COORDINATOR'], num_processes=n,
                  process_id=i, **timeouts)
    if env.get('TRANSFORMER_LOCAL_DEVICE_IDS'):
      kwargs['local_device_ids'] = _ids(env, 'TRANSFORMER_LOCAL_DEVICE_IDS')
    return kwargs
  if all(k in env for k in _SLURM) and 'SLURM_STEP_ID' in env:
    if _int(env, 'SLURM_NTASKS') == 1:
      return None
    kwargs = dict(cluster_detection_method='slurm', **timeouts)
    local = _slurm_local_devices(env)
    if local is not None:
      kwargs['local_device_ids'] = local
    return kwargs
  if env.get('TRANSFORMER_DISTRIBUTED') == 'auto' or _on_tpu_vm():
    return dict(timeouts)
  return None


def initialize(env=None):
  """Join the multi-process job the environment describes; returns True when one was joined."""
  kwargs = plan(env)
  if kwargs is None:
    return False
  # CPU devices talk across processes through gloo (GPU and TPU computations are unaffected).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  return True


def is_primary():
  """Only process 0 writes logs, hparams and text files; every process takes part in saves."""
  return jax.process_index() == 0


def allgather_ints(values):
  """[process 0's values, process 1's, ...]: every process's list of ints in [0, 2**62), on
  every process (a collective: all processes call it at the same point). One process: [values].

  Ints travel as two 31-bit halves, so counts past 2**31 survive jax's default 32-bit ints.
  """
  values = [int(v) for v in values]
  if jax.process_count() == 1:
    return [values]
  if any(not 0 <= v < 2**62 for v in values):
    raise ValueError(f'allgather_ints takes ints in [0, 2**62), got {values}')
  halves = np.array([[v >> 31, v & 0x7FFFFFFF] for v in values], np.int32).reshape(-1, 2)
  gathered = np.asarray(multihost_utils.process_allgather(halves))   # [processes, n, 2]
  return [[(int(hi) << 31) | int(lo) for hi, lo in row] for row in gathered]


def print_once(*args, **kwargs):
  """print on process 0 only: one line per event however many processes run the job."""
  if is_primary():
    print(*args, **kwargs)
