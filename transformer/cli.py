"""The one command-line parser and error exit of every entry point.

  parser = cli.Parser('python -m transformer.summary', __doc__, workdir=False)
  args, config = parser.parse_config(argv)          # --config FILE[:ARG] + --config.a.b=v
  args, overrides = parser.parse(argv)              # overrides kept as {'a.b': 'v'} strings

Every bad flag or value is one line `error: ...` on stderr and exit code 2, whether argparse,
the override syntax or config validation finds it; `main` does the same for a ConfigError
raised while the entry point runs (and exit 1 for a TrainingError). `exit_process(main())`
ends an entry point's process.
"""

import argparse
import atexit
import functools
import os
import sys
import threading

from transformer import config as config_lib
from transformer.errors import ConfigError, TrainingError

DEFAULT_CONFIG = 'configs/gpt2.py:tiny'


def fail(message):
  """Print `error: message` and exit 2 (bad user input)."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def split_overrides(argv):
  """({'a.b': 'v'} from every --config.a.b=v, the other arguments); ConfigError without '='."""
  overrides, rest = {}, []
  for arg in argv:
    if arg.startswith('--config.'):
      key, eq, value = arg[len('--config.'):].partition('=')
      if not eq:
        raise ConfigError(f'{arg}: give a value, e.g. --config.{key}=VALUE')
      overrides[key] = value
    else:
      rest.append(arg)
  return overrides, rest


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors, `--config` / `--workdir` when asked, and overrides aside."""

  def __init__(self, prog, doc=None, *, config=True, config_required=False, workdir=True):
    super().__init__(prog=prog, description=(doc or '').strip().split('\n')[0],
                     allow_abbrev=False,
                     epilog='Any config key: --config.section.key=value (see configs/common.py).')
    if config:
      self.add_argument('--config', required=config_required,
                        default=None if config_required else DEFAULT_CONFIG,
                        help='config file and optional size, e.g. configs/bert.py:base')
    if workdir:
      self.add_argument('--workdir', default='runs',
                        help='runs live in WORKDIR/experiment/run_name')

  def error(self, message):
    fail(f'{message} (see {self.prog} --help)')

  def parse(self, argv=None):
    """(argparse namespace, {override key: string value})."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
      overrides, rest = split_overrides(argv)
    except ConfigError as e:
      fail(str(e))
    return self.parse_args(rest), overrides

  def parse_config(self, argv=None):
    """(argparse namespace, the validated config of --config with the overrides applied)."""
    args, overrides = self.parse(argv)
    try:
      return args, config_lib.load(args.config, overrides)
    except ConfigError as e:
      fail(str(e))


def parse(argv, *, extra_flags=(), prog='python -m transformer.train'):
  """(args, validated config) for an entry point of --config, --workdir and boolean
  `extra_flags` (e.g. ('dry_run',)); exits with one line on bad input."""
  parser = Parser(prog)
  for flag in extra_flags:
    parser.add_argument(f'--{flag}', action='store_true')
  return parser.parse_config(argv)


def exit_process(code):
  """End this process with `code` (an int or None) as the interpreter would, less its final
  garbage collection of every module object: threads joined, atexit handlers run, streams
  flushed, then os._exit. With TensorFlow and JAX loaded that collection took 2.2-2.5 s of CPU
  per process on this 2-core machine (4-9 s of wall time when the cores are shared; a stack
  sample shows Py_FinalizeEx in gc_collect_main); sweeps, comparisons and their tests start
  hundreds of processes."""
  shutdown = getattr(threading, '_shutdown', None)   # joins non-daemon threads, as exit does
  if shutdown is not None:
    shutdown()
  atexit._run_exitfuncs()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):   # a closed pipe: nothing left to say
      pass
  os._exit(0 if code is None else code)


def main(fn):
  """Decorate an entry point's `main(argv=None) -> int`: a ConfigError it raises is one line and
  exit 2, a TrainingError one line and exit 1."""
  @functools.wraps(fn)
  def wrapped(argv=None):
    try:
      return fn(argv)
    except ConfigError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    except TrainingError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
  return wrapped
