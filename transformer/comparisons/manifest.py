"""What a comparison's numbers depend on, written beside them as <experiment>/manifest.json.

  code        the git commit of the code that ran (and whether the tree had local changes)
  python      the interpreter and standard library it read (the embedded corpora are that
              library's source, docstrings and gettext catalogs)
  packages    the versions of the libraries the numbers pass through
  devices     the JAX backend and devices, XLA_FLAGS (with --deterministic:
              --xla_gpu_deterministic_ops=true, so GPU reductions repeat bit for bit)
  tasks       which tasks ran and why the others did not (translate needs the gettext catalogs)
  corpus      what every cell pretrained on ('embedded', or a TFDS name such as c4/en)
  data        the derived data files with their sha256 (data/ of the experiment)

Written at the start of every run of the comparison (the last one wins), and its summary line
is appended to comparison.md.
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import sysconfig

from transformer.files import atomic_write

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'scipy',
            'tensorflow', 'tensorflow-cpu', 'tensorflow-datasets', 'sentencepiece', 'tokenizers', 'sacrebleu',
            'ml-collections')
DETERMINISTIC_FLAG = '--xla_gpu_deterministic_ops=true'
NAME = 'manifest.json'


def _version(name):
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git(repo):
  def git(*args):
    return subprocess.run(['git', '-C', repo, *args], capture_output=True, text=True,
                          timeout=20, check=False).stdout.strip()
  try:
    commit = git('rev-parse', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.SubprocessError):
    return {'commit': None, 'dirty': None}
  return {'commit': commit or None, 'dirty': dirty if commit else None}


def sha256(path):
  """The hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def data_files(data_dir):
  """{relative path: sha256} of every file under the experiment's data directory."""
  out = {}
  for root, _, files in os.walk(data_dir):
    for name in sorted(files):
      path = os.path.join(root, name)
      out[os.path.relpath(path, data_dir)] = sha256(path)
  return dict(sorted(out.items()))


def deterministic():
  """Turn on XLA's deterministic GPU ops for this process and the runs it starts."""
  flags = os.environ.get('XLA_FLAGS', '')
  if DETERMINISTIC_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {DETERMINISTIC_FLAG}'.strip()


def collect(plan, data_dir):
  """The manifest dict of `plan` (see the module docstring)."""
  import jax  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return {
      'experiment': plan.module.EXPERIMENT, 'declaration': os.path.abspath(plan.path),
      'scale': plan.scale, 'seeds': plan.seeds, 'finetune_seeds': plan.finetune_seeds,
      'corpus': plan.corpus,
      'overrides': {k: str(v) for k, v in plan.extra.items()},
      'code': _git(repo),
      'python': {'version': platform.python_version(), 'implementation':
                 platform.python_implementation(), 'stdlib': sysconfig.get_paths()['stdlib'],
                 'executable': sys.executable},
      'platform': platform.platform(),
      'packages': {name: _version(name) for name in PACKAGES},
      'devices': {'backend': jax.default_backend(), 'count': jax.device_count(),
                  'kind': jax.devices()[0].device_kind,
                  'xla_flags': os.environ.get('XLA_FLAGS', '')},
      'tasks': {name: task.unavailable() or 'ran' for name, task in plan.tasks.items()},
      'data': data_files(data_dir) if os.path.isdir(data_dir) else {},
  }


def write(plan, data_dir):
  """Write <experiment>/manifest.json; returns its path."""
  path = os.path.join(plan.exp_dir, NAME)
  os.makedirs(plan.exp_dir, exist_ok=True)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(collect(plan, data_dir), f, indent=1)
  return path


def summary_line(exp_dir):
  """One line for comparison.md: commit, Python, JAX and devices ('' without a manifest)."""
  try:
    with open(os.path.join(exp_dir, NAME), encoding='utf-8') as f:
      m = json.load(f)
  except (OSError, ValueError):
    return ''
  commit = (m['code']['commit'] or 'unknown')[:10] + (' (local changes)' if m['code']['dirty']
                                                      else '')
  return (f'Environment ({NAME}): code {commit}, Python {m["python"]["version"]}, JAX '
          f'{m["packages"]["jax"]} on {m["devices"]["count"]} {m["devices"]["kind"]}, '
          f'XLA_FLAGS "{m["devices"]["xla_flags"]}", {len(m["data"])} data files fingerprinted.')
