"""Training progress on the console: a live tqdm bar on a terminal, plain lines elsewhere.

  progress = Progress(total_steps, initial=step, every=config.train.log_every)
  progress.update(step, loss=..., tokens_per_sec=...)   # after every step
  progress.write('step 200: eval/loss 4.1234, ...')     # a line above the bar
  progress.close()

On a terminal the bar (tqdm, on stderr) moves with every step and is redrawn at most every
`refresh_s`: `step 37/600   6%|##     | 00:05<01:10, 7.9step/s, loss 6.8312, 8.1k tok/s`.
Anywhere else (a file, a pipe, CI, a SLURM log) a plain line every `every` steps and at the
last one: `step 40/600 (6.7%), loss 6.8123, 8.1k tok/s, 00:05 elapsed, ETA 01:10`.
"""

import math
import os
import sys
import time

import tqdm

BAR_FORMAT = ('step {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}, '
              '{rate_fmt}{postfix}')


def rate_text(tokens_per_sec, units='tokens'):
  """8123.4 -> '8.12k tok/s' (tqdm's SI prefixes); other units by name ('8.12k patches/s')."""
  return (f'{tqdm.tqdm.format_sizeof(float(tokens_per_sec))} '
          f'{"tok" if units == "tokens" else units}/s')


def _fields(loss, tokens_per_sec, units='tokens'):
  parts = []
  if loss is not None:
    parts.append(f'loss {float(loss):.4f}')
  if tokens_per_sec is not None:
    parts.append(rate_text(tokens_per_sec, units))
  return parts


def _columns(stream):
  try:
    return os.get_terminal_size(stream.fileno()).columns
  except (AttributeError, OSError, ValueError):
    return 0


class Progress:
  """Progress of a run from `initial` (after a resume) to `total` steps; `enabled=False`
  (processes other than 0) shows nothing; `units` names what the rate counts (an image
  model's tokens are patches)."""

  def __init__(self, total, *, initial=0, every=20, enabled=True, stream=None, refresh_s=0.1,
               units='tokens'):
    self.units = units
    self.total = max(int(total), 1)
    self.initial = int(initial)
    self.every = max(int(every), 1)
    self.enabled = enabled
    self.stream = stream if stream is not None else sys.stderr
    self.tty = enabled and bool(getattr(self.stream, 'isatty', lambda: False)())
    self._start = time.monotonic()
    self._latest = None      # (step, loss, tokens/s) of the last update
    self._printed = None     # the step of the last plain line
    self._bar = None
    if self.tty:   # a terminal of unknown size (a bare pty: 0 x 0) gets 100 x 20
      sized = _columns(self.stream) > 0
      self._bar = tqdm.tqdm(total=self.total, initial=self.initial, file=self.stream,
                            unit='step', dynamic_ncols=sized, ncols=None if sized else 100,
                            nrows=None if sized else 20, mininterval=refresh_s, miniters=1,
                            smoothing=0.1, bar_format=BAR_FORMAT)

  def update(self, step, loss=None, tokens_per_sec=None):
    """Records that `step` steps are done (with the loss and rate to show so far)."""
    if not self.enabled:
      return
    step = int(step)
    self._latest = (step, loss, tokens_per_sec)
    if self._bar is not None:
      self._bar.set_postfix_str(', '.join(_fields(loss, tokens_per_sec, self.units)),
                                refresh=False)
      self._bar.update(step - self._bar.n)
    elif step % self.every == 0 or step >= self.total:
      self._print_line()

  def line(self, step, loss=None, tokens_per_sec=None):
    """The plain progress line of `step` (what a log file gets)."""
    elapsed = time.monotonic() - self._start
    done = step - self.initial
    eta = (self.total - step) * elapsed / done if done > 0 else math.nan
    parts = [f'step {step}/{self.total} ({100.0 * step / self.total:.1f}%)',
             *_fields(loss, tokens_per_sec, self.units), f'{tqdm.tqdm.format_interval(elapsed)} elapsed',
             f'ETA {tqdm.tqdm.format_interval(eta) if math.isfinite(eta) else "?"}']
    return ', '.join(parts)

  def _print_line(self):
    self.stream.write(self.line(*self._latest) + '\n')
    self.stream.flush()
    self._printed = self._latest[0]

  def write(self, text, file=None):
    """Print `text` (to stdout by default) without breaking the bar."""
    if not self.enabled:
      return
    file = file if file is not None else sys.stdout
    if self._bar is not None:
      tqdm.tqdm.write(text, file=file)
    else:
      file.write(text + '\n')
      file.flush()

  def close(self):
    """Ends the bar (left on screen at its last state) or prints the last step's line; after
    it, `write` prints plain lines."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    elif self.enabled and self._latest is not None and self._printed != self._latest[0]:
      self._print_line()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
