"""Speed and memory of the train step, for each model family at each size.

  python experiments/benchmark.py --families encoder,decoder,encoder_decoder --sizes tiny,small \
      --steps 10 --dtype bfloat16 --out results.json [--config.model.scan_layers=true ...]

Each row drives the real training code (config loading, tokenizer, objective, `Trainer`) on one
family config: encoder = configs/bert.py (mlm), decoder = configs/gpt2.py (causal_lm),
encoder_decoder = configs/t5.py (span_corruption). It measures

  init_s        the run setup (setup.prepare: tokenizer, objective, mesh, trainer) and the
                initial state (jitted init, optimizer state)
  compile_s     AOT compile of the train step (`Trainer.compile`)
  step_s        median over --steps timed steps after --warmup, each waited for with
                block_until_ready; the batch is ONE batch from the real data pipeline on the
                embedded corpus, reused every step, so data loading is never timed
  tokens_per_s  non-padding tokens of that batch (every stream, as perf/tokens_per_sec) / step_s
  flops_per_step  transformer.accounting.flops_per_token(config)['total_train'] x the non-padding
                tokens of the OUTPUT stream (summary's "per token": the targets of an
                encoder-decoder, whose encoder work it spreads over them; the only stream else)
  mfu           flops_per_step / step_s / (peak_flops x devices); the peak comes from
                transformer.perf.peak_flops in this same run and is named in the output (a
                published dense peak on accelerators, a measured matmul rate on CPU)
  memory        compiled.memory_analysis() per device: arguments + outputs + temporaries -
                aliased (the donated state), and on GPUs the allocator's peak_bytes_in_use (a
                high-water mark of the whole process, so it never falls from one row to the next)
  memory_temp_bytes  the compiled step's temporaries alone, beside logits_bytes, one float32
                [B, scored positions, V] array (the cross-entropy's forward runs in chunks
                of at most kernels.CHUNK_ELEMENTS logits, see models/kernels.py)
  logits_sized_buffers  the arrays of one logits array's element count the compiled step writes
                (its HLO, fusions' insides and aliases left out): 'name [shape]'; 2 (the logits
                and their gradient) for GPT-2 and T5 above one chunk of logits, 3 for BERT's
                biased MLM head (its bias add is a third); the table's 'logits-sized' column
                counts them
  packing_efficiency  non-padding share of the batch's token slots (every stream)

On CPU the batch and sequence length default to 2 x 128 (published sizes otherwise take minutes
per step); the table header says so. --mesh_presets is the preset over all local devices (only
'data'). Any --config.KEY=VALUE is applied to every family's config last.

Our step against the Hugging Face PyTorch model of the same shape (experiments/benchmark_torch.py),
the packing efficiency of the pipeline per objective (experiments/benchmark_packing.py), and a
trace of the timed steps for TensorBoard's profile tab:

  python experiments/benchmark.py --vs_torch [--shapes issue,tiny] [--threads 2,1] [--out f.json]
  python experiments/benchmark.py --packing [--seq_lens 128,256,512] [--out f.json]
  python experiments/benchmark.py --families decoder --sizes tiny --profile /tmp/prof

Sharding presets on 8 fake CPU devices (re-runs itself in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8; tiny sizes, batch 8 x 64 by default):

  python experiments/benchmark.py --sharding_presets [--meshes single,fsdp8] [--families decoder]

Each mesh is (data, fsdp, tensor) with its preset: single 1x1x1 on one device, data8 8x1x1,
fsdp8 1x8x1, tensor4 1x1x4 (on 4 devices), data2_tensor4 2x1x4; memory is per device.
"""

import gc
import json
import math
import os
import statistics
import sys
import time

import jax

from experiments import benchmark_memory, benchmark_output
from experiments.benchmark_configs import (CPU_BATCH, CPU_SEQ_LEN, FAMILIES, family_config,
                                          platform as _platform)
from transformer import cli
from transformer.data import packing
from transformer.errors import ConfigError
from transformer.monitoring import accounting, perf
from transformer.monitoring.perf import output_stream, tokens_in
from transformer.training import setup, sharding

MESH_PRESETS = ('data',)   # --mesh_presets: the preset over every local device
# --sharding_presets: name -> (mesh.shape, mesh.preset, devices used)
SHARDING_MESHES = {
    'single': ((1, 1, 1), 'data', 1),
    'data8': ((8, 1, 1), 'data', 8),
    'fsdp8': ((1, 8, 1), 'fsdp', 8),
    'tensor4': ((1, 1, 4), 'tensor', 4),
    'data2_tensor4': ((2, 1, 4), 'data_tensor', 8),
}
FAKE_DEVICES = 8
PRESET_BATCH, PRESET_SEQ_LEN = 8, 64
_CHILD = 'TRANSFORMER_BENCHMARK_CHILD'
DEFAULT_STEPS = {'cpu': 3, 'accelerator': 20}
DEFAULT_WARMUP = {'cpu': 1, 'accelerator': 3}


def parse_args(argv):
  """(argparse namespace, {config key: string value}) from argv; ConfigError on bad flags."""
  p = cli.Parser('python -m experiments.benchmark', __doc__, config=False, workdir=False)
  p.add_argument('--families', default=','.join(FAMILIES), help='comma list of ' +
                 ', '.join(FAMILIES))
  p.add_argument('--sizes', default='tiny,small', help='comma list of config sizes')
  p.add_argument('--steps', type=int, default=None, help='timed steps (CPU 3, else 20)')
  p.add_argument('--warmup', type=int, default=None, help='untimed steps first (CPU 1, else 3)')
  p.add_argument('--batch_size', type=int, default=None,
                 help=f'sequences per step (default: the config\'s; CPU: at most {CPU_BATCH})')
  p.add_argument('--seq_len', type=int, default=None,
                 help=f'data.seq_len (default: the config\'s; CPU: at most {CPU_SEQ_LEN})')
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                 help='model.dtype (compute); parameters stay float32')
  p.add_argument('--mesh_presets', default='data', help='comma list; only data for now')
  p.add_argument('--sharding_presets', action='store_true',
                 help=f'time each mesh of --meshes on {FAKE_DEVICES} fake CPU devices')
  p.add_argument('--meshes', default=','.join(SHARDING_MESHES),
                 help='with --sharding_presets: comma list of ' + ', '.join(SHARDING_MESHES))
  p.add_argument('--out', default='', help='write the results here as JSON')
  p.add_argument('--profile', default='', help='write a jax.profiler trace of each row\'s timed '
                 'steps into DIR/<family>_<size>/ (tensorboard --logdir DIR, PROFILE tab)')
  p.add_argument('--vs_torch', action='store_true',
                 help='our step vs the Hugging Face PyTorch model (experiments/benchmark_torch.py)')
  p.add_argument('--shapes', default='issue,tiny', help='with --vs_torch: comma list of issue, tiny')
  p.add_argument('--threads', default='2,1', help='with --vs_torch: comma list of 2 (all '
                 'cores), 1 (one pinned core)')
  p.add_argument('--rounds', type=int, default=4, help='with --vs_torch: alternations')
  p.add_argument('--scan_compare', action='store_true', help='each --families/--sizes row at '
                 'every --depths, unrolled and with model.scan_layers (compile time vs depth)')
  p.add_argument('--depths', default='12,24', help='with --scan_compare: comma list of layers')
  p.add_argument('--compile_rounds', type=int, default=None,
                 help='compiles per row, the median reported (default 1; --scan_compare: 3)')
  p.add_argument('--packing', action='store_true', help='packing efficiency of the data '
                 'pipeline per objective (experiments/benchmark_packing.py); no model is run')
  p.add_argument('--seq_lens', default='128,256,512', help='with --packing: comma list')
  p.add_argument('--batches', type=int, default=20, help='with --packing: batches per row')
  overrides, rest = cli.split_overrides(argv)
  args = p.parse_args(rest)
  args.families = [f for f in args.families.split(',') if f]
  args.sizes = [s for s in args.sizes.split(',') if s]
  args.mesh_presets = [m for m in args.mesh_presets.split(',') if m]
  args.meshes = [m for m in args.meshes.split(',') if m]
  args.shapes = [x for x in args.shapes.split(',') if x]
  threads = [x.strip() for x in args.threads.split(',') if x.strip()]
  if not threads or any(x not in ('1', '2') for x in threads):
    raise ConfigError(f'--threads={args.threads}: a comma list of 1 and 2, e.g. --threads 2,1')
  args.threads = [int(x) for x in threads]
  args.seq_lens = [int(x) for x in args.seq_lens.split(',') if x.strip()]
  args.depths = [int(x) for x in args.depths.split(',') if x.strip()]
  args.compile_rounds = args.compile_rounds or (3 if args.scan_compare else 1)
  for x in args.shapes:
    if x not in ('issue', 'tiny'):
      raise ConfigError(f'--shapes: unknown shape {x!r}; choose from issue, tiny')
  for m in args.meshes:
    if m not in SHARDING_MESHES:
      raise ConfigError(f'--meshes: unknown mesh {m!r}; choose from {", ".join(SHARDING_MESHES)}')
  if args.sharding_presets:
    if not any(a.startswith('--sizes') for a in rest):
      args.sizes = ['tiny']
    args.batch_size = args.batch_size or PRESET_BATCH
    args.seq_len = args.seq_len or PRESET_SEQ_LEN
  for f in args.families:
    if f not in FAMILIES:
      raise ConfigError(f'--families: unknown family {f!r}; choose from {", ".join(FAMILIES)}')
  for m in args.mesh_presets:
    if m not in MESH_PRESETS:
      raise ConfigError(f'--mesh_presets: {m!r} is not supported yet; use '
                        f'{", ".join(MESH_PRESETS)} (other presets come with the sharding work)')
  for name in ('steps', 'warmup', 'batch_size', 'seq_len', 'rounds', 'batches',
               'compile_rounds'):
    value = getattr(args, name)
    if value is not None and (value < 0 or (value == 0 and name != 'warmup')):
      raise ConfigError(f'--{name}={value}: must be positive')
  kind = _platform()
  args.steps = args.steps or DEFAULT_STEPS[kind]
  args.warmup = DEFAULT_WARMUP[kind] if args.warmup is None else args.warmup
  return args, overrides


def time_steps(step_fn, state, batch, warmup, steps, profile_dir=''):
  """(median seconds per step, final state): each step waited for before the clock stops; the
  timed steps traced into `profile_dir` when given."""
  for _ in range(warmup):
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
  times = []
  if profile_dir:
    jax.profiler.start_trace(profile_dir)
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  if profile_dir:
    jax.profiler.stop_trace()
  loss = float(metrics['loss'][0]) / max(float(metrics['loss'][1]), 1e-9)
  if not math.isfinite(loss):
    raise RuntimeError(f'the benchmarked step produced a non-finite loss ({loss})')
  return statistics.median(times), state


def bench_one(family, size, args, mesh_preset, overrides, peak, mesh_name=None):
  """One result row: build, compile and time the train step of `family` at `size` (on the
  SHARDING_MESHES entry `mesh_name` when given)."""
  shape, devices = None, None
  if mesh_name:
    shape, mesh_preset, count = SHARDING_MESHES[mesh_name]
    devices = jax.devices()[:count]
  spec, config = family_config(family, size, args, mesh_preset, overrides, shape)
  t0 = time.perf_counter()
  run = setup.prepare(config, 'unused', devices=devices)
  config, mesh, trainer = run.config, run.mesh, run.trainer
  state = trainer.init_state()
  init_s = time.perf_counter() - t0
  host_batch = next(run.pipeline('train').iterator(0))
  batch = sharding.global_batch(host_batch, mesh)
  params = accounting.count_params(accounting.abstract_model(config))['total']
  compiles = []
  for _ in range(args.compile_rounds):   # the median of several: compile time is load-sensitive
    t0 = time.perf_counter()
    step_fn = trainer.compile(state, batch)
    compiles.append(time.perf_counter() - t0)
  compile_s = statistics.median(compiles)
  memory = benchmark_memory.step_memory(run, step_fn)
  profile_dir = (os.path.join(args.profile, f'{family}_{spec.rsplit(":", 1)[1]}' +
                              (f'_{mesh_name}' if mesh_name else '')) if args.profile else '')
  step_s, state = time_steps(step_fn, state, batch, args.warmup, args.steps, profile_dir)
  tokens = tokens_in(host_batch)
  out_tokens = tokens_in(host_batch, (output_stream(host_batch),))
  flops_token = accounting.flops_per_token(config)['total_train']
  flops_step = flops_token * out_tokens
  peak_flops, peak_name = peak
  devices = mesh.size
  achieved = flops_step / step_s / devices
  del state, step_fn, batch
  gc.collect()
  device = jax.devices()[0]
  return {
      'family': family, 'config': spec, 'size': spec.rsplit(':', 1)[1],
      'objective': config.objective, 'params': int(params),
      'batch': int(config.train.batch_size), 'seq_len': int(config.data.seq_len),
      'targets_len': int(config.data.targets_len), 'dtype': args.dtype,
      'mesh_preset': mesh_preset, 'mesh': mesh_name or mesh_preset,
      'mesh_shape': [int(v) for v in mesh.shape.values()], 'steps': args.steps,
      'num_layers': int(config.model.num_layers), 'scan_layers': bool(config.model.scan_layers),
      'warmup': args.warmup,
      'init_s': init_s, 'compile_s': compile_s, 'compile_times': compiles, 'step_s': step_s,
      'tokens_per_step': tokens,
      'packing_efficiency': packing.fill(host_batch), 'profile_dir': profile_dir,
      'tokens_per_s': tokens / step_s, 'output_tokens_per_step': out_tokens,
      'flops_per_token': float(flops_token), 'flops_per_step': float(flops_step), 'tflops_per_device': achieved / 1e12,
      'mfu': achieved / peak_flops, 'peak_name': peak_name, 'peak_flops': float(peak_flops),
      **memory, 'peak_bytes_in_use': benchmark_memory.device_peak_bytes(),
      'device_kind': device.device_kind, 'platform': device.platform, 'device_count': devices,
      'jax_version': jax.__version__,
  }


def run(args, overrides):
  """Every row of the benchmark (sizes outer, so the small rows come first) and its context."""
  load_start = os.getloadavg()
  peak = perf.peak_flops(args.dtype)
  rows, skipped = [], []
  if args.sharding_presets:
    for size in args.sizes:
      for family in args.families:
        for name in args.meshes:
          print(f'benchmarking {family} {size} on mesh {name} ...', file=sys.stderr, flush=True)
          try:
            rows.append(bench_one(family, size, args, None, overrides, peak, mesh_name=name))
          except ConfigError as e:   # e.g. 2 heads cannot split over tensor=4: say so, go on
            skipped.append({'family': family, 'size': size, 'mesh': name, 'reason': str(e)})
  variants = [{}] if not args.scan_compare else [
      {'model.num_layers': str(d), 'model.scan_layers': str(scan)} for d in args.depths
      for scan in (False, True)]
  for mesh_preset in [] if args.sharding_presets else args.mesh_presets:
    for size in args.sizes:
      for family in args.families:
        for variant in variants:
          print(f'benchmarking {family} {size} ({mesh_preset}) {variant or ""} ...',
                file=sys.stderr, flush=True)
          rows.append(bench_one(family, size, args, mesh_preset, {**overrides, **variant}, peak))
  device = jax.devices()[0]
  meta = {'device_kind': device.device_kind, 'platform': device.platform,
          'device_count': jax.device_count(), 'jax_version': jax.__version__,
          'dtype': args.dtype, 'peak_name': peak[1], 'peak_flops': float(peak[0]),
          'load_average_start': list(load_start), 'load_average_end': list(os.getloadavg()),
          'cpu_reduced': _platform() == 'cpu' and not (args.batch_size and args.seq_len),
          'steps': args.steps, 'warmup': args.warmup, 'sharding_presets': args.sharding_presets,
          'skipped': skipped}
  return {'meta': meta, 'rows': rows}


def _mib(n):
  return '-' if n is None else f'{n / 2**20:,.1f}'


def markdown(result):
  """The results as a Markdown table under a header that says what was measured where."""
  m = result['meta']
  if m.get('sharding_presets'):
    return sharding_markdown(result)
  lines = [f'### Train step on {m["device_count"]} x {m["device_kind"]} ({m["platform"]}), '
           f'jax {m["jax_version"]}, {m["dtype"]}',
           f'MFU against {m["peak_name"]}: {m["peak_flops"] / 1e12:.3f} TFLOP/s per device. '
           f'Median of {m["steps"]} steps after {m["warmup"]} warm-up. Load average (1/5/15 min) '
           f'{"/".join(f"{x:.2f}" for x in m["load_average_start"])} at start, '
           f'{"/".join(f"{x:.2f}" for x in m["load_average_end"])} at end.']
  if m['cpu_reduced']:
    lines.append(f'CPU run: batch and seq_len reduced to at most {CPU_BATCH} x {CPU_SEQ_LEN} '
                 'by default (pass --batch_size / --seq_len for the config values).')
  lines += ['', '| family | config | params | batch x len | packing | compile s | step s | '
            'tokens/s | GFLOP/step | MFU | memory MiB | temp MiB | logits MiB | logits-sized | '
            'peak MiB |', '|' + '---|' * 15]
  for r in result['rows']:
    length = f'{r["seq_len"]}+{r["targets_len"]}' if r['family'] == 'encoder_decoder' else str(
        r['seq_len'])
    lines.append(
        f'| {r["family"]} | {r["config"]} | {r["params"] / 1e6:,.1f}M | {r["batch"]} x {length} | '
        f'{r["packing_efficiency"]:.3f} | {r["compile_s"]:.1f} | {r["step_s"]:.3f} | '
        f'{r["tokens_per_s"]:,.0f} | {r["flops_per_step"] / 1e9:,.1f} | {100 * r["mfu"]:.1f}% | '
        f'{_mib(r["memory_bytes"])} | {_mib(r.get("memory_temp_bytes"))} | '
        f'{_mib(r["logits_bytes"])} | {len(r["logits_sized_buffers"])} | '
        f'{_mib(r["peak_bytes_in_use"])} |')
  return '\n'.join(lines + scan_summary(result['rows']))


def scan_summary(rows):
  """With --scan_compare: compile time deepest / shallowest, and step time scan / unrolled."""
  by = {(r['config'], r['num_layers'], r['scan_layers']): r for r in rows}
  out = []
  for config in dict.fromkeys(r['config'] for r in rows):
    depths = sorted({d for c, d, _ in by if c == config})
    if len(depths) < 2 or not all((config, d, s) in by for d in depths for s in (False, True)):
      continue
    lo, hi = depths[0], depths[-1]
    for scan in (False, True):
      ratio = by[config, hi, scan]['compile_s'] / by[config, lo, scan]['compile_s']
      out.append(f'{config} {"scan" if scan else "unrolled"}: compile {hi} / {lo} layers = '
                 f'{ratio:.2f}x')
    for d in depths:
      ratio = by[config, d, True]['step_s'] / by[config, d, False]['step_s']
      out.append(f'{config} {d} layers: step time scan / unrolled = {ratio:.3f}')
  return [''] + out if out else []


def sharding_markdown(result):
  """One row per family x mesh: the same model timed under each sharding preset."""
  m = result['meta']
  lines = [f'### Train step per sharding preset on {m["device_count"]} x {m["device_kind"]} '
           f'({m["platform"]}), jax {m["jax_version"]}, {m["dtype"]}',
           f'Median of {m["steps"]} steps after {m["warmup"]} warm-up. Fake CPU devices share '
           'the host\'s cores, so this compares the programs (collectives, shapes), not hardware '
           f'scaling. Load average {"/".join(f"{x:.2f}" for x in m["load_average_start"])} at '
           f'start, {"/".join(f"{x:.2f}" for x in m["load_average_end"])} at end.', '',
           '| family | config | mesh | data x fsdp x tensor | preset | batch x len | compile s | '
           'step s | tokens/s | memory MiB/device |', '|' + '---|' * 10]
  for r in result['rows']:
    lines.append(
        f'| {r["family"]} | {r["config"]} | {r["mesh"]} | '
        f'{" x ".join(map(str, r["mesh_shape"]))} | {r["mesh_preset"]} | {r["batch"]} x '
        f'{r["seq_len"]} | {r["compile_s"]:.1f} | {r["step_s"]:.3f} | {r["tokens_per_s"]:,.0f} | '
        f'{_mib(r["memory_bytes"])} |')
  for skip in m['skipped']:
    lines.append(f'\nNot run: {skip["family"]} {skip["size"]} on {skip["mesh"]}: {skip["reason"]}')
  return '\n'.join(lines)


def _run_with_fake_devices(argv):
  """Re-run this script with FAKE_DEVICES CPU devices (XLA fixes the count at start-up)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='', **{_CHILD: '1'})
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={FAKE_DEVICES}').strip()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, '-m', 'experiments.benchmark', *argv], env=env,
                        cwd=repo, check=False).returncode


def vs_torch(argv, args, overrides):
  """--vs_torch: the 2-thread rows here, the 1-thread rows from a pinned child process."""
  from experiments import benchmark_torch as bt  # pylint: disable=import-outside-toplevel
  load_start = os.getloadavg()
  if os.environ.get(bt._CHILD):   # pylint: disable=protected-access
    return {'meta': bt.meta(load_start), 'rows': bt.run(args, overrides)}
  rows = bt.run(args, overrides) if 2 in args.threads else []
  if 1 in args.threads:
    import tempfile  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, 'one_thread.json')
      if bt.run_pinned(_without_flag(argv, '--out') + ['--out', out]):
        raise RuntimeError('the one-thread comparison failed (its output is above)')
      with open(out) as f:
        rows += json.load(f)['rows']
  return {'meta': bt.meta(load_start), 'rows': rows}


def _without_flag(argv, flag):
  """argv without `flag VALUE` / `flag=VALUE`."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a == flag:
      skip = True
    elif not a.startswith(flag + '='):
      out.append(a)
  return out


@cli.main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  if '--sharding_presets' in argv and not os.environ.get(_CHILD):
    parse_args(argv)   # bad flags fail here, before the subprocess starts
    return _run_with_fake_devices(argv)
  args, overrides = parse_args(argv)
  if args.packing:
    from experiments import benchmark_packing  # pylint: disable=import-outside-toplevel
    result = benchmark_packing.run(args)
    print(benchmark_packing.markdown(result))
  elif args.vs_torch:
    from experiments import benchmark_torch  # pylint: disable=import-outside-toplevel
    result = vs_torch(argv, args, overrides)
    print(benchmark_torch.markdown(result['rows'], result['meta']))
  else:
    result = run(args, overrides)
    print(markdown(result))
  if args.out:
    benchmark_output.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
