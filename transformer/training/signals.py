"""SIGTERM / SIGINT as a request to stop: the training loop saves a checkpoint, then exits 0."""

import logging
import signal

log = logging.getLogger(__name__)


class StopSignal:
  """Turns SIGTERM/SIGINT into a polite request: the loop polls `.requested`, saves and exits 0.

  A second SIGINT gets the default behaviour back (KeyboardInterrupt), for a user who really
  wants out now. Outside the main thread (where handlers cannot be installed) it does nothing.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.requested = False
    self.signal_name = None
    self._previous = {}

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

  def __enter__(self):
    try:
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    except ValueError:  # not the main thread
      log.warning('StopSignal: not in the main thread, signal handlers not installed')
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()
