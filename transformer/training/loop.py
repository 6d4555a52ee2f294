"""The training loop: `train(config, workdir)` trains (or resumes) one run.

One run lives in <workdir>/<experiment>/<run_name>/: resolved config.json, tokenizer.model,
TensorBoard events and checkpoints/. A run directory that holds a checkpoint resumes from it
(parameters, optimizer, every process's data position); SIGTERM/SIGINT save before exiting.
A step's metrics are fetched once the next step is dispatched, and every step is checked for a
finite loss and gradient before it is logged or saved.
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax

from transformer.data.pipeline import POSITION_FORMAT, upgrade_position
from transformer.errors import ConfigError, TrainingError
from transformer.monitoring import accounting, compiled, perf
from transformer.training import (checkpoint, console, distributed, evaluation, setup, sharding,
                                  signals)
from transformer.training import hooks as hooks_lib
from transformer.training.distributed import print_once
from transformer.training.trainer import Trainer


def train(config, workdir, *, hooks=None, dry_run=False, show_sharding=False):
  """Train (or resume) the run of `config` under `workdir`; returns the last metrics.

  Prints one line each for the data, model and mesh (the per-parameter sharding table too when
  the mesh spans several devices or with `show_sharding`); `hooks` (default
  `hooks.standard()`: TensorBoard, the console and progress bar, the profiler) see the steps,
  logs, evals and saves (training/hooks.py). SIGTERM/SIGINT from here on are requests: the
  loop saves after the step it is in (a signal during start-up or compile is honoured after the
  first step) and returns.
  """
  with signals.StopSignal() as stop:
    return _train(config, workdir, stop, hooks_lib.standard() if hooks is None else hooks,
                  dry_run, show_sharding)


def _train(config, workdir, stop, hooks, dry_run, show_sharding):
  run = setup.prepare(config, workdir)
  latest = run.latest_step()
  if latest is not None and latest >= run.steps:
    print_once(f'{run.dir} already reached step {latest} of {run.steps}; nothing to do.')
    return {}
  train_data = run.pipeline('train')   # reads the source first: a bad one writes nothing
  state, ckpt, position, tokens_seen = restore_or_init(run, latest)
  it = train_data.iterator(position)
  first = next(it)   # before the run directory: a bad first example writes nothing
  _write_run_files(run)
  eval_data = run.pipeline('eval')
  counts = accounting.count_params(accounting.abstract_model(run.config))
  flops_token = accounting.flops_per_token(run.config)['total_train']
  console.announce(run, (it.pipeline, eval_data), first, counts, flops_token,
                   show_sharding=show_sharding)
  t0 = time.perf_counter()
  layout = run.trainer.input_sharding
  step_fn = run.trainer.compile(state, sharding.global_batch(first, run.mesh, layout))
  compile_s = time.perf_counter() - t0
  if dry_run:
    return _report_dry_run(run.config, counts, flops_token, step_fn, compile_s)
  peak, peak_name = perf.peak_flops(run.config.model.dtype)
  hooks = hooks_lib.Hooks(hooks)
  hooks.start(hooks_lib.Session(run=run, step=int(state['step']), compile_s=compile_s,
                                counts=counts, peak=peak, peak_name=peak_name))
  loop = _Loop(run=run, ckpt=ckpt, step_fn=step_fn, it=it, hooks=hooks, stop=stop,
               evaluate=functools.partial(evaluation.evaluate_at, run, pipeline=eval_data,
                                          eval_fn=run.trainer.eval_fn()),
               meter=_Meter(_throughput(run, int(state['step'])), peak, flops_token,
                            tokens_seen))
  last, stopped = loop.train(state, first)
  ckpt.wait_until_finished()
  ckpt.close()
  hooks.finish(last, stopped)
  return last


def restore_or_init(run, latest):
  """(state, checkpointer, data position, tokens seen): the latest checkpoint's, or a fresh state
  (from `checkpoint.init_from`'s weights with a fresh head when given, or a distillation
  student from its teacher's layers with distill.init_from_teacher)."""
  trainer, config = run.trainer, run.config
  state = trainer.init_state()
  ckpt = run.checkpointer(state)
  if latest is not None:
    step0, state, saved = ckpt.restore(Trainer.abstract(state))
    position = upgrade_position(_own_position(saved, step0), saved.get('position_format', 1),
                                run.objective)
    print_once(f'Resumed {run.dir} from step {step0} (data position {position}).')
    for key, before, now in ckpt.changed_settings():
      print_once(f'Note: {key} changed since the checkpoint ({before} -> {now}).')
    return state, ckpt, position, int(saved.get('tokens_seen', 0))
  if config.checkpoint.init_from:
    params, missing, _ = checkpoint.load_pretrained(
        setup.pretrained_paths(config.checkpoint.init_from)[0], state['params'])
    state = trainer.state_from_params(params)
    print_once(f'Initialised from {config.checkpoint.init_from}; '
               f'fresh: {", ".join(missing) or "none"}.')
  elif getattr(run.objective, 'teacher', None) and run.objective.settings['init_from_teacher']:
    state = trainer.state_from_params(run.objective.init_student(state['params']))
    print_once(f'Initialised from the teacher {config.distill.teacher} (every other layer).')
  return state, ckpt, (0, 0), 0


def _write_run_files(run):
  """The run directory with its config.json and tokenizer (process 0 only; a run that reads
  no text has no tokenizer)."""
  if distributed.is_primary():
    os.makedirs(run.dir, exist_ok=True)
    with open(os.path.join(run.dir, 'config.json'), 'w') as f:
      f.write(run.config.to_json_best_effort(indent=2))
    if run.tokenizer is not None:   # tokenizer.model, or tokenizer/ for a Hugging Face one
      run.tokenizer.save_to(run.dir)


def _throughput(run, step):
  """The meter of this session: tokens from the batches' segment ids, or what the objective
  counts where its batches have no token stream (images: images and patches)."""
  return perf.Throughput(step, getattr(run.objective, 'count', None),
                         getattr(run.objective, 'units', None))


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


def _global_sums(*counts):
  """Per-process counts summed over every process (a collective)."""
  return [sum(col) for col in zip(*distributed.allgather_ints(counts))]


@dataclasses.dataclass
class _Meter:
  """Tokens and rates: this session's throughput and the job's tokens seen so far."""
  throughput: perf.Throughput
  peak: float
  flops_token: float
  tokens_seen: int

  def report(self, step):
    """The window's perf/* scalars and train/tokens_seen (collective: counts every process)."""
    scalars, tokens = self.throughput.report(step, peak=self.peak,
                                             flops_per_token=self.flops_token,
                                             sum_fn=_global_sums)
    self.tokens_seen += tokens
    return {**scalars, 'train/tokens_seen': self.tokens_seen}


@dataclasses.dataclass
class _Loop:
  """What the steps of one training session share."""
  run: Any                     # setup.Run
  ckpt: Any                    # checkpoint.Checkpointer
  step_fn: Any                 # the compiled train step
  it: Any                      # the train data iterator (its .state is the data position)
  evaluate: Any                # (state, step=) -> evaluation.EvalResult; every process joins
  hooks: hooks_lib.Hooks
  stop: signals.StopSignal
  meter: _Meter

  def train(self, state, batch):
    """Steps until the run's last step or a stop -> (last metrics, the line it stopped with)."""
    config, steps = self.run.config, self.run.steps
    step = int(state['step'])
    sums, previous, last, stopped = {}, None, {}, None
    while step < steps:
      self.hooks.before_step(step + 1)
      state, metrics = self.step_fn(state, sharding.global_batch(batch, self.run.mesh,
                                                                 self.run.trainer.input_sharding))
      step += 1
      self.meter.throughput.add(batch)
      if previous is not None:  # step t-1's metrics, fetched once step t is dispatched
        sums = evaluation.accumulate(sums, _checked(previous, step - 1))
      previous = metrics
      stopping = self.stop.reached(step)   # read once; every process of a job agrees on the step
      saving = step == steps or stopping or self.ckpt.should_save(step)
      logging_step = step % config.train.log_every == 0 or step == steps
      if logging_step or saving:   # a step is checked before it is logged or saved
        sums, previous = evaluation.accumulate(sums, _checked(previous, step)), None
      live = None
      if logging_step:
        last = self._log_train(step, sums)
        sums = {}
      else:   # the live bar: this window's mean loss so far, the last window's tokens/s
        live = {'loss': evaluation.average(sums).get('loss'),
                'tokens_per_sec': last.get('perf/tokens_per_sec')}
      self.hooks.after_step(step, (state, metrics), live)
      evaluated = None
      if config.train.eval_steps and (step % config.train.eval_every == 0 or step == steps):
        result = self.evaluate(state, step=step)
        why = self.hooks.after_eval(step, result)   # a search trial may stop the run
        evaluated = result.scalars
        last.update(evaluated)
        self.meter.throughput.restart_clock()
        if why:
          stopped, stopping = why, True
          if previous is not None:   # a step is checked before it is saved
            sums, previous = evaluation.accumulate(sums, _checked(previous, step)), None
      if saving or stopping:
        self._save(step, state, evaluated, force=step == steps or stopping)
      if stopping:
        stopped = stopped or (f'Stopped by {self.stop.signal_name} at step {step}; saved. Run '
                              'the same command to resume.')
        break
      if step < steps:
        batch = next(self.it)
    return last, stopped

  def _log_train(self, step, sums):
    """Logs one window: the mean train metrics and the job's rates; returns them."""
    scalars = {**{k if k.startswith('stability/') else f'train/{k}': v   # log.stability's own
                  for k, v in evaluation.average(sums).items()},
               **self.meter.report(step)}
    self.hooks.after_log(step, scalars)
    return {'loss': scalars['train/loss'], **scalars}

  def _save(self, step, state, evaluated, *, force):
    """Every process's data position and the job's tokens seen go with the checkpoint."""
    gathered = distributed.allgather_ints([*self.it.state, self.meter.throughput.tokens])
    self.hooks.before_save(step)
    where = {'positions': [g[:2] for g in gathered],   # every process's, in process order
             'position_format': POSITION_FORMAT,
             'tokens_seen': self.meter.tokens_seen + sum(g[2] for g in gathered)}
    self.ckpt.save(step, state, data_position=where, force=force,
                   metrics={'eval/loss': evaluated['eval/loss']} if evaluated else None)


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


def _report_dry_run(config, counts, flops_token, step_fn, compile_s):
  out_len = config.data.targets_len or config.data.seq_len
  tokens = config.train.batch_size * (
      out_len if config.model.family == 'encoder_decoder' else config.data.seq_len)
  mem = compiled.memory(step_fn)
  print(accounting.format_table(config, param_counts=counts))
  print(f'FLOPs per step: {flops_token * tokens:.3e} ({flops_token:.3e} per output token x '
        f'{tokens} output tokens)')
  if mem is not None:
    print(f'Compiled memory per device: {mem.total / 2**20:.1f} MiB (arguments '
          f'{mem.argument / 2**20:.1f}, temporaries {mem.temp / 2**20:.1f})')
  print(f'Compiled the train step in {compile_s:.1f}s; dry run, exiting.')
  return {'compile_seconds': compile_s, 'flops_per_token': flops_token}
