"""StopSignal: SIGTERM becomes a polite request; a second SIGINT interrupts for real."""

import os
import signal
import time

import pytest

from transformer.training.signals import StopSignal


def test_stop_signal_sigterm():
  previous = signal.getsignal(signal.SIGTERM)
  with StopSignal() as stop:
    assert not stop.requested and not stop.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):   # the handler runs between bytecodes of the main thread
      if stop.requested:
        break
      time.sleep(0.01)
    assert stop.requested and stop.signal_name == 'SIGTERM'
    assert not stop.shared and stop.reached(7)   # one process: its own signal decides
  assert signal.getsignal(signal.SIGTERM) == previous


def test_stop_signal_second_sigint_interrupts():
  with StopSignal() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.5)
