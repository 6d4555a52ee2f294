"""The JSON file a benchmark writes with --out: its result, indented, in a folder made for it."""

import json
import os
import sys


def write_json(path, result):
  """Write `result` to `path` as JSON (creating its folder) and say so on stderr."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {path}', file=sys.stderr)
