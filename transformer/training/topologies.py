"""Named TPU slices, for compiling a run ahead of time on a host without them (plan mode).

  slice_ = topologies.get('v5e-8')          # or 'v5litepod-8', 'v5p-8', 'v6e-16', 'v4-8'
  devices = topologies.devices(slice_, num_slices=2)   # abstract TPU devices: jit(...).lower()

`get` knows the common slice names of each generation (Cloud TPU's accelerator types; v4 and
v5p count TensorCores, two per chip, v5e and v6e count chips; 'v5e-N' is 'v5litepod-N') and
maps each to a topology and its chip's figures. `devices` is the one place that loads libtpu
(`jax.experimental.topologies`): nothing else in the package reaches it, so a CPU run never
starts the TPU runtime.

Per-chip figures are Google's published specifications (cloud.google.com/tpu/docs/v4, /v5e,
/v5p, /v6e, "System architecture", read 2025): HBM capacity, dense bf16 peak, HBM bandwidth and
inter-chip interconnect (ICI) bandwidth. They are data-sheet figures, not measurements.
"""

import dataclasses
import os

from transformer.errors import ConfigError

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str              # 'v5e'
  platform: str                # jax's topology platform name prefix ('v5e', 'v5p', ...)
  hbm_bytes: int               # HBM per chip
  peak_bf16: float             # dense bf16 FLOP/s per chip
  hbm_bandwidth: float         # bytes/s per chip
  ici_bandwidth: float         # bytes/s per chip, all links (collectives inside a slice)
  chip_config: str = 'default'  # libtpu's chip config ('megacore': one device per v4 chip)
  cores_per_chip_in_name: int = 1   # the slice name counts TensorCores (v4, v5p) or chips


CHIPS = {
    'v4': Chip('v4', 'v4', 32 * GiB, 275e12, 1200e9, 2400e9 / 8, 'megacore', 2),
    'v5e': Chip('v5e', 'v5e', 16 * GiB, 197e12, 819e9, 1600e9 / 8),
    'v5p': Chip('v5p', 'v5p', 95 * GiB, 459e12, 2765e9, 4800e9 / 8, 'default', 2),
    'v6e': Chip('v6e', 'v6e', 32 * GiB, 918e12, 1640e9, 3584e9 / 8),
}

# chips -> topology, per generation (the shapes Cloud TPU creates for these slice sizes)
_2D = {1: '1x1', 4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8', 128: '8x16', 256: '16x16'}
_3D = {4: '2x2x1', 8: '2x2x2', 16: '2x2x4', 32: '2x4x4', 64: '4x4x4', 128: '4x4x8',
       256: '4x8x8', 512: '8x8x8', 1024: '8x8x16', 2048: '8x16x16'}
_TOPOLOGIES = {'v4': _3D, 'v5e': _2D, 'v5p': _3D, 'v6e': _2D}


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str                    # 'v5e-8'
  chip: Chip
  chips: int
  topology: str                # '2x4'

  @property
  def chips_per_host_bounds(self):
    """One host's chips: a single host up to 8 chips of v5e/v6e (4 of v4/v5p), else 4."""
    if self.chips <= 8 and len(self.topology.split('x')) == 2:
      return tuple(int(d) for d in self.topology.split('x')) + (1,)
    return (2, 2, 1) if self.chips >= 4 else (1, 1, 1)


def names():
  """Every slice name `get` takes (aliases included), smallest first per generation."""
  out = []
  for gen, table in _TOPOLOGIES.items():
    per = CHIPS[gen].cores_per_chip_in_name
    out += [f'{gen}-{chips * per}' for chips in table]
    if gen == 'v5e':
      out += [f'v5litepod-{chips}' for chips in table]
  return out


def get(name):
  """The Slice of a name like 'v5e-8' (ConfigError naming the flag and the choices)."""
  gen, _, count = name.lower().replace('v5litepod', 'v5e').partition('-')
  chip = CHIPS.get(gen)
  ok = chip is not None and count.isdigit() and int(count) % chip.cores_per_chip_in_name == 0
  chips = int(count) // chip.cores_per_chip_in_name if ok else 0
  if not ok or chips not in _TOPOLOGIES[gen]:
    raise ConfigError(f'`--topology {name}`: not a known TPU slice; choose one of '
                      f'{", ".join(names())}')
  return Slice(name=name, chip=chip, chips=chips, topology=_TOPOLOGIES[gen][chips])


# libtpu reads these at load; on a host that is not a TPU VM their absence makes it print
# warnings about metadata it does not need to compile for a described topology.
_QUIET_LIBTPU = {'TPU_SKIP_MDS_QUERY': '1', 'TPU_ACCELERATOR_TYPE': 'v5litepod-4',
                 'ALLOW_MULTIPLE_LIBTPU_LOAD': '1',   # compile only: several plans at once
                 'TPU_WORKER_HOSTNAMES': 'localhost'}


def local():
  """(Slice, devices) of this host's own devices ('--topology local': a GPU host compiles for
  its GPUs; deviceless GPU compilation does not work, jax issue 28376). HBM from the
  allocator's limit where the backend reports one, the peak from monitoring/perf's table."""
  import jax  # pylint: disable=import-outside-toplevel
  from transformer.monitoring import perf  # pylint: disable=import-outside-toplevel
  devs = jax.devices()
  stats = devs[0].memory_stats() or {}
  peak = next((p['bfloat16'] for n, p in perf.PEAKS.items()
               if n.lower() in devs[0].device_kind.lower() and 'bfloat16' in p), 0.0)
  chip = Chip(devs[0].device_kind, devs[0].platform, int(stats.get('bytes_limit', 0)),
              peak or perf.measured_matmul_flops(), 0.0, 0.0)
  return Slice(name='local', chip=chip, chips=len(devs), topology=''), devs


def devices(slice_, num_slices=1):
  """The abstract devices of `num_slices` copies of `slice_` (compile only, never run)."""
  try:
    import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise ConfigError(f'`--topology {slice_.name}`: compiling for TPU needs libtpu; install '
                      'requirements-plan.txt (./launch.sh plan does)') from None
  if num_slices < 1:
    raise ConfigError(f'`--num_slices {num_slices}`: must be at least 1')
  for key, value in _QUIET_LIBTPU.items():
    os.environ.setdefault(key, value)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  desc = topologies.get_topology_desc(
      platform='tpu', topology_name=f'{slice_.chip.platform}:{slice_.topology}',
      chip_config_name=slice_.chip.chip_config,
      chips_per_host_bounds=slice_.chips_per_host_bounds, num_slices=num_slices)
  return desc.devices
