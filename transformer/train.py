"""The training entry point: `python -m transformer.train --config configs/gpt2.py:tiny --workdir runs`.

One run lives in <workdir>/<experiment>/<run_name>/: resolved config.json, tokenizer.model,
TensorBoard events and checkpoints/. A run directory that holds a checkpoint resumes from it
(parameters, optimizer, every process's data position); SIGTERM/SIGINT save before exiting.
A checkpoint only ever holds a step whose loss and gradient were finite. Token counts (tokens/s,
MFU, train/tokens_seen) are global: the sum over every process's rows.
"""

import json
import math
import os
import sys
import time

import jax
import numpy as np

from configs import common
from transformer import (attention_maps, checkpoint, data, distributed, objectives, sharding,
                         signals, summary)
from transformer import logging as tb
from transformer.errors import ConfigError
from transformer.progress import ProgressBar
from transformer.trainer import Trainer

# Model keys that may differ from a checkpoint's without changing its parameters.
RUNTIME_MODEL_KEYS = ('dropout_rate', 'attention_dropout_rate', 'mlp_dropout', 'final_dropout',
                      'dtype', 'attention_impl', 'remat', 'num_classes')


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss became NaN); the message says why and what to try."""


def _dir_name(key, value):
  """`value` if it names one directory inside its parent; ConfigError otherwise."""
  seps = [s for s in (os.sep, os.altsep, '/') if s]
  if value in ('', '.', '..') or os.path.isabs(value) or any(s in value for s in seps):
    raise ConfigError(f'`{key}={value}`: must be one directory name (no path separators, '
                      "'.' or '..'), so the run stays inside --workdir; e.g. "
                      f'--config.{key}=my_{key}')
  return value


def run_dir(config, workdir):
  """<workdir>/<experiment>/<run_name>: both plain directory names, so runs stay in workdir."""
  return os.path.join(workdir, _dir_name('experiment', config.experiment),
                      _dir_name('run_name', config.run_name or 'run'))


def pretrained_paths(init_from):
  """(checkpoint dir, config.json or None) of `checkpoint.init_from`: one of our run directories,
  its checkpoints/ folder, or an import-hf output (step folders beside config.json)."""
  path = os.path.abspath(os.path.expanduser(init_from))
  if os.path.isdir(os.path.join(path, 'checkpoints')):   # a run directory
    path = os.path.join(path, 'checkpoints')
  candidates = [os.path.join(path, 'config.json')]
  if os.path.basename(path) == 'checkpoints':    # <run>/checkpoints: the run's own config.json
    candidates.append(os.path.join(os.path.dirname(path), 'config.json'))
  return path, next((c for c in candidates if os.path.exists(c)), None)


def resolve(config, tokenizer):
  """Fill what depends on data or a pretrained checkpoint: vocab size, an imported architecture."""
  if config.checkpoint.init_from:
    saved = pretrained_paths(config.checkpoint.init_from)[1]
    if saved:
      with open(saved) as f:
        model = json.load(f)['model']
      for key, value in model.items():
        if key not in RUNTIME_MODEL_KEYS and key in config.model:
          config.model[key] = type(config.model[key])(value) if not isinstance(
              config.model[key], (tuple, list)) else value
  if not config.model.vocab_size:
    config.model.vocab_size = tokenizer.vocab_size
  elif config.model.vocab_size < tokenizer.vocab_size:
    raise ConfigError(f'model.vocab_size={config.model.vocab_size} is smaller than the tokenizer '
                      f'({tokenizer.vocab_size}); set it to 0 to take the tokenizer size')
  return config


def total_steps(config):
  """train.tokens (if set) converts to steps at full packing: tokens / (batch * seq_len)."""
  if config.train.tokens:
    return math.ceil(config.train.tokens / (config.train.batch_size * config.data.seq_len))
  return config.train.steps


def _say(*args, **kwargs):
  """print on process 0 only: one line per event however many processes run the job."""
  if jax.process_index() == 0:
    print(*args, **kwargs)


def fingerprint(config, state):
  model = {k: v for k, v in config.model.to_dict().items() if k not in RUNTIME_MODEL_KEYS}
  shapes = {'/'.join(map(str, p)): list(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(state['params'])[0]}
  return {'model': model, 'num_params': sum(math.prod(s) for s in shapes.values())}


def _tokens(batch):
  """Non-padding tokens of every stream (what tokens/s reports) of this process's rows."""
  return int(sum(np.count_nonzero(v) for k, v in batch.items() if k.endswith('_segment_ids')))


def _output_tokens(batch):
  """Non-padding tokens of the output stream: summary.flops_per_token counts per output token."""
  key = 'targets_segment_ids' if 'targets_segment_ids' in batch else 'inputs_segment_ids'
  return int(np.count_nonzero(batch[key]))


def _global_sums(*counts):
  """Per-process counts summed over every process (a collective)."""
  return [sum(col) for col in zip(*distributed.allgather_ints(counts))]


def resume_settings(config):
  """What a resume compares with the checkpoint: the data order's keys and every opt.* key."""
  keys = {k: config[k.split('.')[0]][k.split('.')[1]] for k in checkpoint.ORDER_KEYS}
  return {**keys, **{f'opt.{k}': v for k, v in config.opt.items()}}


def _own_position(saved, step):
  """This process's data position in a checkpoint's `data_position` (one per process)."""
  positions = saved.get('positions')
  if positions is None and jax.process_count() == 1:   # saved before positions were per process
    positions = [saved['position']]
  if positions is None or len(positions) != jax.process_count():
    count = 'an unknown number of' if positions is None else len(positions)
    raise ConfigError(
        f'the checkpoint of step {step} was saved by {count} processes and this run has '
        f'{jax.process_count()}: each data position counts its own process\'s shard, so they '
        'cannot be mapped; resume with the same number of processes, or start a new run with '
        '--config.checkpoint.init_from=<that run> to keep its weights')
  return tuple(positions[jax.process_index()])


def _average(sums):
  out = {k: float(s) / max(float(c), 1e-9) for k, (s, c) in sums.items()}
  if 'loss' in out:
    out['perplexity'] = float(np.exp(min(out['loss'], 50.0)))
  return out


def _accumulate(acc, metrics):
  for k, (s, c) in metrics.items():
    s0, c0 = acc.get(k, (0.0, 0.0))
    acc[k] = (s0 + float(s), c0 + float(c))
  return acc


def evaluate(trainer, config, params, pipeline, eval_fn):
  """(mean metrics over up to train.eval_steps eval batches, this process's last batch).

  Each eval step is collective, so all processes run as many as the longest shard has: a shard
  that runs out first feeds all-padding batches, which weigh nothing.
  """
  sums, last, it = {}, None, pipeline.iterator(0)
  for _ in range(config.train.eval_steps):
    batch = next(it, None)
    have = [h for [h] in distributed.allgather_ints([batch is not None])]
    if not any(have):
      break
    if last is None and not all(have):
      raise ConfigError(f'`data.eval_split={config.data.eval_split}`: process {have.index(0)} '
                        'has no eval batch; use a larger eval split or fewer processes')
    if batch is None:   # this shard is done and another is not: a batch that weighs nothing
      batch = {k: np.zeros_like(v) for k, v in last.items()}
    else:
      last = batch
    sums = _accumulate(sums, jax.device_get(eval_fn(params, sharding.global_batch(batch,
                                                                              trainer.mesh))))
  return _average(sums), last


def train(config, workdir, *, dry_run=False):
  """Train (or resume) the run of `config` under `workdir`; returns the final metrics."""
  out = run_dir(config, workdir)
  os.makedirs(out, exist_ok=True)
  tokenizer = data.get_tokenizer(config)
  config = resolve(config, tokenizer)
  objective = objectives.get(config, tokenizer)
  steps = total_steps(config)
  mesh = sharding.make_mesh(config.mesh)
  trainer = Trainer.create(config, objective, mesh, steps)
  _say(f'Mesh {dict(mesh.shape)} over {jax.device_count()} devices '
       f'({jax.process_count()} processes), preset {config.mesh.preset!r}:\n'
       f'{trainer.sharding_table}')
  ckpt_dir = os.path.join(out, 'checkpoints')
  latest = checkpoint.Checkpointer(ckpt_dir, every=config.checkpoint.every, keep=1,
                                   keep_best=False).latest_step() if os.path.isdir(
                                       ckpt_dir) else None
  if latest is not None and latest >= steps:
    _say(f'{out} already reached step {latest} of {steps}; nothing to do.')
    return {}
  state = trainer.init_state()
  ckpt = checkpoint.Checkpointer(ckpt_dir, every=config.checkpoint.every,
                                 keep=config.checkpoint.keep, keep_best=config.checkpoint.keep_best,
                                 async_save=config.checkpoint.async_save,
                                 fingerprint=fingerprint(config, state),
                                 settings=resume_settings(config),
                                 model_defaults=common.MODEL_DEFAULTS)
  position, tokens_seen = (0, 0), 0
  if latest is not None:
    step0, state, saved = ckpt.restore(Trainer.abstract(state))
    position, tokens_seen = _own_position(saved, step0), int(saved.get('tokens_seen', 0))
    _say(f'Resumed {out} from step {step0} (data position {position}).')
    for key, before, now in ckpt.changed_settings():
      _say(f'Note: {key} changed since the checkpoint ({before} -> {now}).')
  elif config.checkpoint.init_from:
    params, missing, _ = checkpoint.load_pretrained(
        pretrained_paths(config.checkpoint.init_from)[0], state['params'])
    state = trainer.state_from_params(params)
    _say(f'Initialised from {config.checkpoint.init_from}; fresh: {", ".join(missing) or "none"}.')
  if jax.process_index() == 0:   # the run's files come from process 0 only
    with open(os.path.join(out, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    tokenizer.save(os.path.join(out, 'tokenizer.model'))

  train_data = data.Pipeline(config, objective, tokenizer, split='train',
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
  eval_data = data.Pipeline(config, objective, tokenizer, split='eval',
                            process_index=jax.process_index(), process_count=jax.process_count())
  it = train_data.iterator(position)
  first = next(it)
  t0 = time.perf_counter()
  step_fn = trainer.compile(state, sharding.global_batch(first, mesh))
  compile_s = time.perf_counter() - t0
  counts = summary.count_params(summary.abstract_model(config))
  flops_token = summary.flops_per_token(config)['total_train']
  if dry_run:
    return _report_dry_run(config, counts, flops_token, step_fn, compile_s)

  writer = tb.MetricWriter(out, enabled=jax.process_index() == 0)
  writer.hparams(tb.flatten_config(config), {'eval/loss': None, 'eval/accuracy': None})
  writer.scalars(int(state['step']), {'params/total': counts['total'],
                                      'params/non_embedding': counts['non_embedding'],
                                      'perf/compile_seconds': compile_s})
  peak, peak_name = _peak(config)
  eval_fn = jax.jit(trainer.eval_step)
  _say(f'Training {out}: {counts["total"]:,} parameters, {steps} steps, '
        f'MFU against {peak_name} ({peak / 1e12:.2f} TFLOP/s per device).')
  if jax.process_count() > 1 and config.log.samples:
    _say('Text samples and attention maps are not written in multi-process runs.')
  step = int(state['step'])
  bar = ProgressBar(steps, initial_step=step, enabled=jax.process_index() == 0)
  sums, previous, last = {}, None, {}
  tokens_window, output_window, t_window, step_window = 0, 0, time.perf_counter(), step
  batch, stopped = first, False
  with signals.StopSignal() as stop:
    while step < steps:
      state, metrics = step_fn(state, sharding.global_batch(batch, mesh))
      step += 1
      tokens_window += _tokens(batch)
      output_window += _output_tokens(batch)
      if previous is not None:  # step t-1's metrics, fetched once step t is dispatched
        sums = _accumulate(sums, _checked(previous, step - 1))
      previous = metrics
      stopping = stop.requested   # read once: the signal may arrive at any moment
      saving = step == steps or stopping or ckpt.should_save(step)
      logging_step = step % config.train.log_every == 0 or step == steps
      if logging_step or saving:   # a step is checked before it is logged or saved
        sums, previous = _accumulate(sums, _checked(previous, step)), None
      if logging_step:
        elapsed = time.perf_counter() - t_window
        tokens, outputs = _global_sums(tokens_window, output_window)
        tokens_seen += tokens
        last = _log_train(writer, step, sums, tokens, outputs * flops_token, elapsed, peak,
                          step - step_window, tokens_seen)
        bar.update(step, loss=last['loss'], tokens_per_sec=tokens / elapsed)
        sums, tokens_window, output_window, t_window = {}, 0, 0, time.perf_counter()
        step_window = step
      evaluated = None
      if config.train.eval_steps and (step % config.train.eval_every == 0 or step == steps):
        evaluated = _eval_and_samples(trainer, config, state, eval_data, eval_fn, writer, step,
                                      tokenizer)
        last.update(evaluated)
        t_window = time.perf_counter()
      if saving:
        gathered = distributed.allgather_ints([*it.state, tokens_window])
        writer.flush()   # the logs are on disk before the checkpoint a resume would start from
        where = {'positions': [g[:2] for g in gathered],   # every process's, in process order
                 'tokens_seen': tokens_seen + sum(g[2] for g in gathered)}
        ckpt.save(step, state, data_position=where, force=step == steps or stopping,
                  metrics={'eval/loss': evaluated['eval/loss']} if evaluated else None)
      if stopping:
        ckpt.wait_until_finished()
        print(f'\nStopped by {stop.signal_name} at step {step}; saved. Run the same command to '
              'resume.')
        stopped = True
        break
      if step < steps:
        batch = next(it)
  bar.close()
  ckpt.wait_until_finished()
  ckpt.close()
  final = {k: v for k, v in last.items() if k.startswith('eval/')}
  writer.hparams(tb.flatten_config(config), final)
  writer.close()
  if not stopped:
    _say(f'Finished {steps} steps ({", ".join(f"{k} {v:.4f}" for k, v in final.items())}).\n'
         f'  TensorBoard logs: {out}  (./launch.sh tensorboard {os.path.dirname(out)})\n'
         f'  checkpoints:      {ckpt_dir}')
  return last


def _checked(metrics, step):
  """Fetch a step's metrics; stop with a clear message if the loss or gradient is not finite.

  The loop checks every step before a later one is saved, so the message's claim holds.
  """
  metrics = jax.device_get(metrics)
  loss = float(metrics['loss'][0]) / max(float(metrics['loss'][1]), 1e-9)
  grad_norm = float(metrics['grad_norm'][0])
  if not math.isfinite(loss) or not math.isfinite(grad_norm):
    raise TrainingError(f'loss {loss} or gradient norm {grad_norm} became non-finite at step '
                        f'{step}; no checkpoint holds this step or a later one. Lower '
                        'opt.learning_rate, raise opt.warmup_steps or set opt.grad_clip_norm, '
                        'then resume from the last checkpoint.')
  return metrics


def _peak(config):
  from transformer import perf  # pylint: disable=import-outside-toplevel
  return perf.peak_flops(config.model.dtype)


def _log_train(writer, step, sums, tokens, flops, elapsed, peak, window_steps, tokens_seen):
  """Logs one window of `window_steps` steps: the mean train metrics and the global rates."""
  avg = _average(sums)
  tps = tokens / max(elapsed, 1e-9)
  tflops = flops / max(elapsed, 1e-9) / jax.device_count() / 1e12
  scalars = {f'train/{k}': v for k, v in avg.items()}
  scalars.update({'perf/tokens_per_sec': tps, 'perf/steps_per_sec':
                  window_steps / max(elapsed, 1e-9), 'perf/tflops_per_device': tflops,
                  'perf/mfu': tflops * 1e12 / peak, 'train/tokens_seen': tokens_seen})
  writer.scalars(step, scalars)
  return {'loss': avg['loss'], **scalars}


def _eval_and_samples(trainer, config, state, eval_data, eval_fn, writer, step, tokenizer):
  metrics, batch = evaluate(trainer, config, state['params'], eval_data, eval_fn)
  scalars = {f'eval/{k}': v for k, v in metrics.items()}
  writer.scalars(step, scalars)
  # Sampling runs eagerly on process 0's rows; with several processes the sharded parameters
  # span hosts and every process would have to join, so samples and attention maps are skipped.
  if jax.process_count() == 1 and config.log.samples:
    model = trainer.model(state['params'])
    rows = {k: v[:config.log.samples] for k, v in batch.items()}
    samples = trainer.objective.predict(model, rows, tokenizer,
                                        max_new_tokens=config.log.sample_length)
    text = '\n\n'.join(f'**input:** {s["input"]}\n\n**prediction:** {s["prediction"]}\n\n'
                       f'**reference:** {s["reference"]}' for s in samples)
    writer.text(step, 'samples', text)
    if config.log.attention_images:
      weights = attention_maps.first_layer(trainer.model(state['params']), trainer.objective,
                                           rows)
      if weights is not None:
        writer.attention_images(step, 'attention/layer0', weights)
  writer.flush()
  _say(f'\nstep {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in scalars.items()))
  return scalars


def _report_dry_run(config, counts, flops_token, step_fn, compile_s):
  out_len = config.data.targets_len or config.data.seq_len
  tokens = config.train.batch_size * (
      out_len if config.model.family == 'encoder_decoder' else config.data.seq_len)
  mem = step_fn.memory_analysis()
  print(summary.format_table(config, param_counts=counts))
  print(f'FLOPs per step: {flops_token * tokens:.3e} ({flops_token:.3e} per output token x '
        f'{tokens} output tokens)')
  if mem is not None:
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes -
             mem.alias_size_in_bytes)
    print(f'Compiled memory per device: {total / 2**20:.1f} MiB (arguments '
          f'{mem.argument_size_in_bytes / 2**20:.1f}, temporaries {mem.temp_size_in_bytes / 2**20:.1f})')
  print(f'Compiled the train step in {compile_s:.1f}s; dry run, exiting.')
  return {'compile_seconds': compile_s, 'flops_per_token': flops_token}


def main(argv=None):
  from transformer import cli  # pylint: disable=import-outside-toplevel
  args, config = cli.parse(argv if argv is not None else sys.argv[1:], extra_flags=('dry_run',))
  try:
    distributed.initialize()  # before any device is touched; no-op for a single process
    train(config, args.workdir, dry_run=args.dry_run)
  except (ConfigError, TrainingError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2 if isinstance(e, ConfigError) else 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
