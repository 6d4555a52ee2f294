"""SIGTERM / SIGINT as a request to stop: the training loop saves a checkpoint, then exits 0.

One process: the request is this process's own signal. Several processes (`jax.distributed`):
the processes must stop and save at the same step, or their saves' collectives mismatch. A
signal may reach one host only (a TPU maintenance event, the preemption of one Slurm node), so
the stop goes through JAX's preemption service: SIGTERM is caught by its notifier (installed by
`jax.distributed.initialize`, which we leave in place), the notice reaches every process through
the coordination service, and `multihost_utils.reached_preemption_sync_point(step)` turns true on
every process at the same step (the largest step any process had reached, plus one). SIGINT is
forwarded to that notifier as a SIGTERM to this process, so Ctrl-C on one host agrees the same way.
"""

import logging
import os
import signal

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def _shared_stop():
  """True in a multi-process job whose preemption service runs (jax's default)."""
  return jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service


class StopSignal:
  """Turns SIGTERM/SIGINT into a polite request; the loop asks `reached(step)` after every step.

  A second SIGINT gets the default behaviour back (KeyboardInterrupt), for a user who really
  wants out now. Outside the main thread (where handlers cannot be installed) it does nothing.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.shared = _shared_stop()   # several processes, which must agree on the step
    self.requested = False         # this process was signalled
    self.signal_name = None
    self._previous = {}

  def reached(self, step) -> bool:
    """True when the run should save and stop after `step`. In a multi-process job it is true on
    every process at the same step; call it after every step, from the same first step on all."""
    if not self.shared:
      return self.requested
    if not multihost_utils.reached_preemption_sync_point(int(step)):
      return False
    self.signal_name = self.signal_name or 'a preemption notice (SIGTERM to a process of this job)'
    return True

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self.requested:
      # Second interrupt: hand control back to Python's default Ctrl-C.
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.requested = True
    self.signal_name = name
    log.warning('%s received: saving a checkpoint and stopping after this step%s', name,
                ' (Ctrl-C again to abort now)' if signum == signal.SIGINT else '')
    if self.shared:   # through the preemption notifier, so that every process hears of it
      os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self):
    # In a multi-process job SIGTERM stays with JAX's preemption notifier: a handler of ours
    # would replace it, and the other processes would never hear of the signal.
    ours = [s for s in self.signals if not (self.shared and s == signal.SIGTERM)]
    try:
      for s in ours:
        self._previous[s] = signal.signal(s, self._handle)
    except ValueError:  # not the main thread
      log.warning('StopSignal: not in the main thread, signal handlers not installed')
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()
