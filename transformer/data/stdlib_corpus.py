"""`python_stdlib`: an embedded corpus read from the running interpreter's standard library.

Every machine that runs this code has a Python standard library, so this corpus needs no network
and no download: the default source for smoke runs, tests and tutorials. Two configs:

  text        real English prose: every module, class and function docstring (headed by its
              qualified name) plus the language reference in `pydoc_data.topics`, split into
              paragraph groups. Field 'text'.
  docstrings  a code-to-text pair task: a function's source with its docstring removed ->
              the docstring's summary line. Fields 'inputs', 'targets'.

Sources are read with `ast` (never imported or executed). Test packages, site-packages and
unreadable files are skipped. Examples carry a stable id; the split is a hash of that id, so the
same interpreter always gives the same train/validation split.
"""

import ast
import hashlib
import inspect
import os
import sysconfig
import textwrap
import tokenize

from etils import epath
import tensorflow_datasets as tfds

STDLIB_ROOT = None           # None: sysconfig's stdlib; tests point it at a small folder
VALIDATION_PERCENT = 5       # of examples, chosen by a stable hash of the example id
_SKIP_DIRS = frozenset({
    'test', 'tests', 'idle_test', 'site-packages', 'dist-packages', '__pycache__', 'lib2to3',
    'ensurepip', 'turtledemo'})
_MIN_DOC_CHARS = 20          # shorter docstrings are mostly 'Return x.' noise
_MAX_GROUP_CHARS = 2000      # paragraph groups of the text config stay below this
_MAX_SOURCE_CHARS = 2000     # longer functions are left out of the docstrings config


def stable_hash(key: str) -> int:
  """A 32-bit number from a string that every process and run agrees on (md5, not Python's
  salted `hash`): the one hash behind every validation split and derived-data draw."""
  return int.from_bytes(hashlib.md5(key.encode('utf-8')).digest()[:4], 'little')


def is_validation(example_id: str, percent: int = VALIDATION_PERCENT) -> bool:
  """Stable split membership of an example id (or a local file's line)."""
  return stable_hash(example_id) % 100 < percent


def validation_ids(ids, percent: int = VALIDATION_PERCENT):
  """The ids of the validation split: `is_validation`, and never empty for 2+ examples.

  (TFDS refuses an empty split; a tiny corpus gives its lowest-hash example to validation.)
  """
  ids = list(ids)
  chosen = {i for i in ids if is_validation(i, percent)}
  if not chosen and len(ids) > 1:
    chosen = {min(ids, key=lambda i: hashlib.md5(i.encode('utf-8')).digest())}
  return chosen


def stdlib_files(root=None):
  """Sorted (relative path, source) of the readable standard-library modules outside tests."""
  root = root or STDLIB_ROOT or sysconfig.get_paths()['stdlib']
  for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    if _SKIP_DIRS & set(rel_dir.split(os.sep)) or rel_dir.startswith('config-'):
      dirnames[:] = []
      continue
    dirnames.sort()
    for name in sorted(filenames):
      if not name.endswith('.py') or name.startswith('test_'):
        continue
      path = os.path.join(dirpath, name)
      try:
        with tokenize.open(path) as f:
          yield os.path.normpath(os.path.join(rel_dir, name)), f.read()
      except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
        continue


def _module_name(rel_path):
  name = rel_path[:-3].replace(os.sep, '.')
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


def _documented_nodes(tree, prefix):
  """(qualified name, node) for the module and every class/function in it, in source order."""
  stack = [(prefix, tree)]
  while stack:
    name, node = stack.pop()
    yield name, node
    children = [c for c in ast.iter_child_nodes(node)
                if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    stack.extend((f'{name}.{c.name}', c) for c in reversed(children))


def _paragraph_groups(text, max_chars=_MAX_GROUP_CHARS):
  """Consecutive blank-line-separated paragraphs joined while the group stays short."""
  groups, current = [], ''
  for para in text.split('\n\n'):
    para = para.strip('\n')
    if not para.strip():
      continue
    if current and len(current) + len(para) + 2 > max_chars:
      groups.append(current)
      current = ''
    current = f'{current}\n\n{para}' if current else para
  if current:
    groups.append(current)
  return groups


def text_examples(files):
  """(id, 'text') examples: docstrings per documented object, then the language reference."""
  for rel_path, source in files:
    try:
      tree = ast.parse(source)
    except (SyntaxError, ValueError):
      continue
    for qualname, node in _documented_nodes(tree, _module_name(rel_path)):
      doc = ast.get_docstring(node)
      if not doc or len(doc) < _MIN_DOC_CHARS:
        continue
      for k, group in enumerate(_paragraph_groups(f'{qualname}\n\n{doc}')):
        yield f'doc:{rel_path}:{getattr(node, "lineno", 0)}:{qualname}:{k}', group
  try:
    from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for topic in sorted(topics.topics):
    for k, group in enumerate(_paragraph_groups(topics.topics[topic])):
      yield f'topic:{topic}:{k}', group


def _summary_line(doc):
  for line in doc.strip().splitlines():
    if line.strip():
      return line.strip()
  return ''


def docstring_pairs(files):
  """(id, inputs, targets): function source without its docstring -> the docstring's summary."""
  for rel_path, source in files:
    try:
      tree = ast.parse(source)
    except (SyntaxError, ValueError):
      continue
    lines = source.splitlines()
    for qualname, node in _documented_nodes(tree, _module_name(rel_path)):
      if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
        continue
      doc = ast.get_docstring(node)
      summary = _summary_line(doc or '')
      if len(summary) < 10:
        continue
      doc_node = node.body[0]
      kept = (lines[node.lineno - 1:doc_node.lineno - 1] +
              lines[doc_node.end_lineno:node.end_lineno])
      code = textwrap.dedent('\n'.join(kept)).strip('\n')
      if not code or len(code) > _MAX_SOURCE_CHARS:
        continue
      yield f'fn:{rel_path}:{node.lineno}:{qualname}', code, summary


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose data is on this machine: no download, no checksums file, and a
  deterministic train/validation split of what `_all_examples` returns.

  TFDS locates a builder's code (for its checksums file) through a code path that needs the
  optional `importlib_resources` package for modules outside `tensorflow_datasets`; our builders
  have nothing to checksum, so they name their own file.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):
    return {}

  def _log_download_bytes(self):
    """One line instead of TFDS's 'Downloading ... Unknown size' and its progress bars."""
    print(f'data   preparing {self.info.full_name} in {self.data_dir_root} (first use only)...',
          flush=True)
    tfds.display_progress_bar(False)

  def _log_download_done(self):
    tfds.display_progress_bar(True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local.
    return {'train': self._generate_examples(validation=False),
            'validation': self._generate_examples(validation=True)}

  def _generate_examples(self, validation):
    """The examples of one split; the same ids fall in validation on every machine."""
    examples = self._all_examples()
    chosen = validation_ids(i for i, _ in examples)
    for example_id, example in examples:
      if (example_id in chosen) == validation:
        yield example_id, example

  def _all_examples(self):
    """Every (id, example) of the builder's config, in a fixed order."""
    raise NotImplementedError


class PythonStdlib(LocalBuilder):
  """Docstrings and code of the local Python standard library (no download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Docstring text and function -> summary pairs.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='text', description='Docstrings and language reference.'),
      tfds.core.BuilderConfig(name='docstrings', description='Function source -> summary line.'),
  ]

  def _info(self):
    if self.builder_config.name == 'text':
      features = {'id': tfds.features.Text(), 'text': tfds.features.Text()}
    else:
      features = {'id': tfds.features.Text(), 'inputs': tfds.features.Text(),
                  'targets': tfds.features.Text()}
    return tfds.core.DatasetInfo(
        builder=self,
        description=inspect.cleandoc(__doc__.split('\n\n')[0]),
        features=tfds.features.FeaturesDict(features),
        homepage='https://docs.python.org/3/library/',
    )

  def _all_examples(self):
    """Every (id, example) of this config, read once and shared by both splits."""
    if getattr(self, '_examples_cache', None) is None:
      files = list(stdlib_files())
      if self.builder_config.name == 'text':
        examples = [(i, {'id': i, 'text': t}) for i, t in text_examples(files)]
      else:
        examples = [(i, {'id': i, 'inputs': x, 'targets': y})
                    for i, x, y in docstring_pairs(files)]
      self._examples_cache = examples
    return self._examples_cache
