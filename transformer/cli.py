"""Command-line parsing shared by the entry points: --config FILE[:ARG], --workdir, --config.a.b=v."""

import argparse
import sys

from transformer import config as config_lib
from transformer.errors import ConfigError

DEFAULT_CONFIG = 'configs/gpt2.py:tiny'


def parse(argv, *, extra_flags=()):
  """(args, validated config) from argv; exits with a one-line error on bad input."""
  parser = argparse.ArgumentParser(allow_abbrev=False)
  parser.add_argument('--config', default=DEFAULT_CONFIG,
                      help='config file and optional size, e.g. configs/bert.py:base')
  parser.add_argument('--workdir', default='runs', help='runs live in WORKDIR/experiment/run_name')
  for flag in extra_flags:
    parser.add_argument(f'--{flag}', action='store_true')
  overrides, rest = {}, []
  for arg in argv:
    if arg.startswith('--config.'):
      key, eq, value = arg[len('--config.'):].partition('=')
      if not eq:
        _fail(f'{arg}: give a value, e.g. --config.{key}=VALUE')
      overrides[key] = value
    else:
      rest.append(arg)
  args, unknown = parser.parse_known_args(rest)
  if unknown:
    _fail(f'unknown flag {unknown[0]}; flags are --config, --workdir, --config.KEY=VALUE' +
          ''.join(f', --{f}' for f in extra_flags))
  try:
    config = config_lib.load(args.config, overrides)
  except ConfigError as e:
    _fail(str(e))
  return args, config


def _fail(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)
