"""What the training loop reports to: hooks called at its fixed points.

The loop (`loop.train`) keeps only what must stay in order: the step, the one-step-behind fetch
of metrics, the finite check, eval (a collective), saving with the data positions, the token
count. Everything a person watches is a hook: TensorBoard (`TensorBoard`), the progress bar and
console lines (`Console`), traces of chosen steps (`Profiler`), and a search trial's report
(`transformer/sweeps/trial.py`, composed by the entry point). The points, in the loop's order:

  start(session)              once, after the train step compiled (`Session` below)
  before_step(step)           before step `step` (1 = the first update) is dispatched
  after_step(step, out, live) once step `step` is dispatched: `out` its (state, metrics) arrays,
                              `live` {'loss': the window's mean so far, 'tokens_per_sec': the
                              last window's}, or None on a logging step (after_log has those)
  after_log(step, scalars)    a logging step: the window's train/* and perf/* scalars
  after_eval(step, result)    an eval (`evaluation.EvalResult`); may return a line: stop after this step
  before_save(step)           a checkpoint of `step` is about to be written
  finish(last, stopped)       the run ends; `stopped` is the line it stopped with, or None

`standard()` also holds `StabilityWarning`: with `log.stability`, one line on stderr the first
time a logged max attention logit passes monitoring/stability.py's MAX_LOGIT.

Every hook runs on every process (a hook decides what process 0 alone does).
"""

import dataclasses
import sys
from typing import Any

import jax

from transformer.monitoring import accounting, profiler, stability
from transformer.monitoring import writer as tb
from transformer.monitoring.progress import Progress
from transformer.training import console, evaluation, generation
from transformer.training.distributed import is_primary, print_once


@dataclasses.dataclass
class Session:
  """What the hooks learn at start."""
  run: Any                 # setup.Run
  step: int                # the step this session starts from (0, or the resumed one)
  compile_s: float
  counts: dict             # accounting.count_params: total, non_embedding, ...
  peak: float              # peak FLOP/s per device, and its name
  peak_name: str
  hooks: list = dataclasses.field(default_factory=list)   # every hook of the session

  def extra(self, name):
    """The union of the hooks' `hparams` or `metrics` dicts (extra HParams-dashboard columns)."""
    return {k: v for h in self.hooks for k, v in getattr(h, name, {}).items()}


class Hook:
  """A no-op at every point; a hook overrides the points it needs."""
  hparams: dict = {}       # extra HParams-dashboard columns
  metrics: dict = {}       # extra HParams-dashboard metric tags

  def start(self, session): ...
  def before_step(self, step): ...
  def after_step(self, step, outputs, live): ...
  def after_log(self, step, scalars): ...
  def after_eval(self, step, result): ...
  def before_save(self, step): ...
  def finish(self, last, stopped): ...


class Hooks:
  """Calls each hook in order at each point; `after_eval` gives the first line a hook stopped
  with (every hook still sees the eval)."""

  def __init__(self, hooks):
    self.hooks = list(hooks)

  def _each(self, point, *args):
    return [getattr(h, point)(*args) for h in self.hooks]

  def start(self, session):
    session.hooks = self.hooks
    self._each('start', session)

  def before_step(self, step):
    self._each('before_step', step)

  def after_step(self, step, outputs, live):
    self._each('after_step', step, outputs, live)

  def after_log(self, step, scalars):
    self._each('after_log', step, scalars)

  def after_eval(self, step, result):
    return next((why for why in self._each('after_eval', step, result) if why), None)

  def before_save(self, step):
    self._each('before_save', step)

  def finish(self, last, stopped):
    self._each('finish', last, stopped)


def standard():
  """The hooks of every training run: TensorBoard, the console, the profiler."""
  return [TensorBoard(), Console(), Profiler(), StabilityWarning()]


class TensorBoard(Hook):
  """The run's event files (process 0): the tag contract of monitoring/writer.py."""

  def start(self, session):
    run = session.run
    self.run, self.writer = run, tb.MetricWriter(run.dir, enabled=is_primary())
    self.hparams_in = {**tb.flatten_config(run.config), **session.extra('hparams')}
    corpus = getattr(run.objective, 'gathered_metrics', ())   # F1, Matthews, correlations
    self.writer.hparams(self.hparams_in,
                        {'eval/loss': None, 'eval/accuracy': None,
                         **dict.fromkeys(generation.metric_tags(run)),
                         **dict.fromkeys(f'eval/{m}' for m in corpus),
                         **session.extra('metrics')},
                        first=run.config.log.hparams_first)
    self.writer.scalars(session.step, {'params/total': session.counts['total'],
                                       'params/non_embedding': session.counts['non_embedding'],
                                       **{f'params/{k}': v for k, v in session.counts.items()
                                          if k == 'active'},   # mixture of experts
                                       'perf/compile_seconds': session.compile_s})
    self.writer.layout(tb.scalars_layout(run.config))

  def after_log(self, step, scalars):
    self.writer.scalars(step, scalars)

  def after_eval(self, step, result):
    self.writer.scalars(step, result.scalars)
    evaluation.write_pictures(self.run, result, self.writer, step)
    self.writer.flush()

  def before_save(self, step):
    self.writer.flush()   # the logs are on disk before the checkpoint a resume would start from

  def finish(self, last, stopped):
    final = {k: v for k, v in last.items() if k.startswith('eval/')}
    self.writer.hparams(self.hparams_in, final, first=self.run.config.log.hparams_first)
    self.writer.close()


class Console(Hook):
  """The start line, the progress bar, eval lines, the stop line and the closing lines."""

  def start(self, session):
    run, log = session.run, session.run.config.log
    self.run = run
    print_once(console.training_line(run, session.compile_s, session.peak, session.peak_name))
    if jax.process_count() > 1 and (log.samples or log.attention_images or log.attention_stats):
      print_once('Text samples and attention maps and statistics are not written in '
                 'multi-process runs.')
    self.bar = Progress(run.steps, initial=session.step, every=run.config.train.log_every,
                        enabled=is_primary(), units=accounting.unit(run.config)[1])

  def after_step(self, step, outputs, live):
    if live is not None:   # the live bar between logging steps
      self.bar.update(step, **live)

  def after_log(self, step, scalars):
    self.bar.update(step, loss=scalars['train/loss'],
                    tokens_per_sec=scalars['perf/tokens_per_sec'])

  def after_eval(self, step, result):
    self.bar.write(console.eval_line(step, result.scalars))

  def finish(self, last, stopped):
    self.bar.close()
    if stopped:
      print(stopped)   # every process: each says where it stopped
    else:
      console.finished(self.run, {k: v for k, v in last.items() if k.startswith('eval/')})


class Profiler(Hook):
  """Traces the steps `log.profile_steps` names (process 0) for TensorBoard's profile tab."""

  def start(self, session):
    self.trace = profiler.StepProfiler(session.run.dir, session.run.config.log.profile_steps,
                                       enabled=is_primary())

  def before_step(self, step):
    self.trace.before(step)

  def after_step(self, step, outputs, live):
    self.trace.after(step, outputs)

  def finish(self, last, stopped):
    self.trace.close()


class StabilityWarning(Hook):
  """With log.stability: warns once (process 0, stderr) when a logged max attention logit passes
  stability.MAX_LOGIT (monitoring/stability.py says why that threshold)."""

  def start(self, session):
    self.watching = bool(session.run.config.log.get('stability', False)) and is_primary()

  def after_log(self, step, scalars):
    line = stability.warning(scalars, step) if self.watching else None
    if line:
      print(line, file=sys.stderr)
      self.watching = False
