"""A dependency-free terminal progress line: step/total, loss, tokens/s and ETA.

On a TTY one line is redrawn in place (at most every `refresh_s`); in a log file or pipe a plain
line is printed every tenth of the run or every `min_interval_s`, whichever comes first.
"""

import math
import sys
import time


def _duration(seconds) -> str:
  if seconds is None or not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


def _rate(x) -> str:
  if x >= 1e6:
    return f'{x / 1e6:.2f}M'
  if x >= 1e3:
    return f'{x / 1e3:.1f}k'
  return f'{x:.0f}'


class ProgressBar:
  """Progress of a training run from `initial_step` (e.g. after a resume) to `total_steps`."""

  def __init__(self, total_steps, *, initial_step=0, enabled=True, stream=None,
               min_interval_s=30.0, refresh_s=0.2):
    self.total = max(int(total_steps), 1)
    self.initial = int(initial_step)
    self.enabled = enabled
    self.stream = stream if stream is not None else sys.stderr
    self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())
    self.min_interval_s = min_interval_s
    self.refresh_s = refresh_s
    self._start = time.monotonic()
    self._last_emit = -math.inf
    self._next_tenth = self._tenth_after(self.initial)
    self._line = ''
    self._emitted_line = None
    self._width = 0

  def _tenth_after(self, step):
    tenth = max(self.total // 10, 1)
    return (step // tenth + 1) * tenth

  def _format(self, step, loss, tokens_per_sec):
    elapsed = time.monotonic() - self._start
    done = step - self.initial
    eta = (self.total - step) * elapsed / done if done > 0 and elapsed > 0 else None
    parts = [f'step {step}/{self.total}', f'{100.0 * step / self.total:5.1f}%']
    if loss is not None:
      parts.append(f'loss {float(loss):.4f}')
    if tokens_per_sec is not None:
      parts.append(f'{_rate(float(tokens_per_sec))} tok/s')
    parts.append(f'elapsed {_duration(elapsed)}')
    parts.append(f'ETA {_duration(eta)}')
    return ' | '.join(parts)

  def update(self, step, loss=None, tokens_per_sec=None):
    """Records `step` (the number of finished steps) and shows it when it is time to."""
    if not self.enabled:
      return
    step = int(step)
    self._line = self._format(step, loss, tokens_per_sec)
    now = time.monotonic()
    if self.tty:
      if now - self._last_emit >= self.refresh_s or step >= self.total:
        self._draw()
        self._last_emit = now
    elif step >= self._next_tenth or now - self._last_emit >= self.min_interval_s:
      self._print()
      self._last_emit = now
      self._next_tenth = self._tenth_after(step)

  def _draw(self):
    pad = max(self._width - len(self._line), 0)
    self.stream.write('\r' + self._line + ' ' * pad)
    self.stream.flush()
    self._width = len(self._line)
    self._emitted_line = self._line

  def _print(self):
    self.stream.write(self._line + '\n')
    self.stream.flush()
    self._emitted_line = self._line

  def close(self):
    """Shows the last state (if not shown yet) and ends the line."""
    if not self.enabled or not self._line:
      return
    if self.tty:
      if self._emitted_line != self._line:
        self._draw()
      self.stream.write('\n')
      self.stream.flush()
    elif self._emitted_line != self._line:
      self._print()
    self._line = ''

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
