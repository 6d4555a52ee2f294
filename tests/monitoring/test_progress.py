"""The console progress: a live tqdm bar on a terminal, a plain line every `every` steps in a
file or pipe, nothing on processes other than 0."""

import io
import math
import os
import select
import sys

from transformer.monitoring import progress


class _Stream(io.StringIO):

  def __init__(self, tty):
    super().__init__()
    self._tty = tty

  def isatty(self):
    return self._tty


def test_a_file_gets_a_plain_line_every_log_every_steps_and_at_the_end():
  out = _Stream(tty=False)
  bar = progress.Progress(95, every=20, stream=out)
  for step in range(1, 96):
    bar.update(step, loss=2.0 - step / 100, tokens_per_sec=1234.5)
  bar.close()
  lines = out.getvalue().splitlines()
  assert [l.split(' ')[1] for l in lines] == ['20/95', '40/95', '60/95', '80/95', '95/95']
  assert '\r' not in out.getvalue()
  assert lines[-1].startswith('step 95/95 (100.0%), loss 1.0500, 1.23k tok/s')
  assert 'elapsed' in lines[0] and 'ETA' in lines[0]


def test_the_last_step_is_printed_once_when_the_run_stops_between_lines():
  out = _Stream(tty=False)
  bar = progress.Progress(100, initial=10, every=20, stream=out)
  for step in range(11, 46):
    bar.update(step, loss=1.0)
  bar.close()
  bar.close()
  assert [l.split(' ')[1] for l in out.getvalue().splitlines()] == ['20/100', '40/100',
                                                                     '45/100']


def test_a_terminal_gets_a_bar_redrawn_at_every_step(monkeypatch):
  out = _Stream(tty=True)
  written = _Stream(tty=True)
  bar = progress.Progress(50, initial=10, stream=out, refresh_s=0)
  for step in range(11, 51):
    bar.update(step, loss=math.nan if step < 20 else 3.0 + 1 / step, tokens_per_sec=2e6)
    if step == 30:
      bar.write('step 30: eval/loss 3.1000', file=written)
  bar.close()
  frames = out.getvalue().split('\r')
  for step in range(11, 51):
    assert any(f.startswith(f'step {step}/50') for f in frames), step
  last = [f for f in frames if f.startswith('step 50/50')][-1]
  assert 'loss 3.0200' in last and '2.00M tok/s' in last and '100%' in last
  assert written.getvalue() == 'step 30: eval/loss 3.1000\n'
  assert out.getvalue().endswith('\n')


def test_disabled_progress_shows_nothing():
  out = _Stream(tty=True)
  bar = progress.Progress(5, stream=out, enabled=False)
  bar.update(5, loss=1.0)
  bar.write('hello', file=out)
  bar.close()
  assert out.getvalue() == ''


def test_a_terminal_of_unknown_size_still_gets_the_bar(monkeypatch):
  """A fresh pty as stderr reports 0 x 0 (as under `script` or some CI runners), where tqdm on
  its own would stay blank."""
  master, slave = os.openpty()
  stream = os.fdopen(slave, 'w')
  monkeypatch.setattr(sys, 'stderr', stream)
  try:
    bar = progress.Progress(3, refresh_s=0)
    assert bar.tty
    for step in range(1, 4):
      bar.update(step, loss=1.0)
    bar.close()
    stream.flush()
    shown = b''
    while select.select([master], [], [], 2)[0]:
      chunk = os.read(master, 65536)
      if not chunk:
        break
      shown += chunk
    assert 'step 3/3 100%' in shown.decode(errors='replace'), shown
  finally:
    stream.close()
    os.close(master)
