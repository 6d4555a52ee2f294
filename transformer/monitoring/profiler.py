"""Traces of chosen train steps for TensorBoard's profile tab (`tensorboard-plugin-profile`).

`log.profile_steps=(START, COUNT)` traces the COUNT steps numbered START, START+1, ... (the
numbers the progress line and TensorBoard show: step 1 is the first update; a run resumed inside
the window traces the rest of it). `jax.profiler`
writes <run dir>/plugins/profile/<timestamp>/<host>.xplane.pb (and a .trace.json.gz), which is
where the plugin looks: `./launch.sh tensorboard <workdir>/<experiment>` then shows each run's
trace under PROFILE. COUNT 0 (the default) traces nothing. Only process 0 traces.
"""

import glob
import os

import jax

from transformer.errors import ConfigError


def check(profile_steps, key='log.profile_steps'):
  """(START, COUNT) as ints; a one-line ConfigError unless COUNT >= 0 and, tracing, START >= 1."""
  values = tuple(profile_steps)
  if len(values) != 2 or values[1] < 0 or (values[1] and values[0] < 1):
    raise ConfigError(f'`{key}={",".join(map(str, values))}`: give START,COUNT (trace COUNT '
                      f'steps from step START >= 1; COUNT 0: off), e.g. --config.{key}=10,5')
  return int(values[0]), int(values[1])


def trace_files(logdir):
  """The trace files under `logdir` where the profile plugin finds them."""
  return sorted(glob.glob(os.path.join(logdir, 'plugins', 'profile', '*', '*.xplane.pb')))


class StepProfiler:
  """Starts a jax.profiler trace before step START and stops it once step START+COUNT-1 is done."""

  def __init__(self, logdir, profile_steps, *, enabled=True):
    self.logdir = logdir
    self.start, count = check(profile_steps)
    self.last = self.start + count - 1 if enabled and count else 0
    self.active = self.done = False

  def before(self, step):
    """Call before dispatching step `step` (1-based)."""
    if self.start <= step <= self.last and not (self.active or self.done):
      os.makedirs(self.logdir, exist_ok=True)
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after(self, step, outputs):
    """Call after dispatching step `step`; waits for `outputs` before the trace stops."""
    if self.active and step >= self.last:
      jax.block_until_ready(outputs)
      self.close()

  def close(self):
    """Stops a trace still running (a run that ended or stopped inside the traced steps)."""
    if self.active:
      self.active, self.done = False, True
      jax.profiler.stop_trace()
