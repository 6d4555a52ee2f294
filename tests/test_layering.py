"""The package's shape: each room imports only rooms below it, and stays small.

The layers, lowest first (docs/ARCHITECTURE.md draws them):
  errors, quiet, files < models < data < objectives < monitoring < training < config, cli < hf
  < sweeps < comparisons < the entry points (train, evaluate, summary, plan, export, generate,
  profile_report, import_hf, sweep, compare, glue)
A module may import its own room and any lower one. Networks (models/) import nothing of ours
but errors; nothing in the package imports the top-level `configs/` or patches sys.path.
"""

import ast
import graphlib
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'transformer')
LAYERS = [('errors', 'quiet', 'files'), ('models',), ('data',), ('objectives',), ('monitoring',),
          ('training',), ('config', 'cli'), ('hf',), ('sweeps',), ('comparisons',),
          ('train', 'evaluate', 'summary', 'plan', 'export', 'generate', 'profile_report',
           'import_hf', 'sweep', 'compare', 'glue', '__init__')]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        yield os.path.relpath(path, PACKAGE), path


def _room(relpath):
  """'training/loop.py' -> 'training'; 'config.py' -> 'config'."""
  first = relpath.split(os.sep)[0]
  return first[:-3] if first.endswith('.py') else first


def _imported_rooms(tree):
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    for name in names:
      parts = name.split('.')
      if parts[0] == 'configs':
        yield 'configs', node.lineno
      elif parts[0] == 'transformer' and len(parts) > 1:
        yield parts[1], node.lineno


def test_every_module_belongs_to_a_layer():
  rooms = {_room(rel) for rel, _ in _modules()}
  assert rooms <= set(RANK), sorted(rooms - set(RANK))


def test_no_module_imports_a_room_above_its_own():
  wrong = []
  for rel, path in _modules():
    room = _room(rel)
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for target, line in _imported_rooms(tree):
      if target == 'configs' or RANK.get(target, -1) > RANK[room]:
        wrong.append(f'{rel}:{line} ({room}) imports {target}')
  assert not wrong, '\n'.join(wrong)


def test_nothing_in_the_package_patches_sys_path():
  offenders = [rel for rel, path in _modules() if 'sys.path' in open(path).read()]
  assert not offenders, offenders


def test_library_files_and_functions_stay_small():
  """No file over ~400 lines, no function over ~60 (docstrings included)."""
  long_files, long_functions = [], []
  for rel, path in _modules():
    with open(path) as f:
      text = f.read()
    if text.count('\n') > MAX_FILE_LINES:
      long_files.append(f'{rel} ({text.count(chr(10))} lines)')
    for node in ast.walk(ast.parse(text, path)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          long_functions.append(f'{rel}:{node.lineno} {node.name} ({length} lines)')
  assert not long_files and not long_functions, long_files + long_functions


def test_only_sweeps_knows_of_search():
  """The search (Optuna, the trial hook) lives in sweeps/; the loop sees it only as a hook the
  entry point composes."""
  wrong = []
  for rel, path in _modules():
    if _room(rel) in ('sweeps', 'comparisons', 'train', 'sweep', 'compare'):
      continue
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      wrong += [f'{rel}:{node.lineno} imports {n}' for n in names if n.split('.')[0] == 'optuna']
  assert not wrong, wrong


def test_only_topologies_loads_the_tpu_runtime():
  """libtpu (and jax's deviceless TPU topologies) is reached only through
  training/topologies.py, which plan mode calls: no other module imports it."""
  wrong = []
  for rel, path in _modules():
    if rel == os.path.join('training', 'topologies.py'):
      continue
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [f'{node.module}.{a.name}' for a in node.names]
               if isinstance(node, ast.ImportFrom) else [])
      wrong += [f'{rel}:{node.lineno} imports {n}' for n in names
                if n.split('.')[0] == 'libtpu' or n == 'jax.experimental.topologies']
  assert not wrong, wrong


def _module_name(rel):
  name = 'transformer.' + rel[:-3].replace(os.sep, '.')
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


def test_no_import_cycle_even_through_imports_inside_functions():
  """An import inside a function must not hide a cycle (compare <-> compare_results was one)."""
  paths = {_module_name(rel): path for rel, path in _modules()}
  graph = {}
  for name, path in paths.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    deps = set()
    for node in ast.walk(tree):
      targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] + [f'{node.module}.{a.name}' for a in node.names]
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
      for target in targets:
        while target and target not in paths:
          target = target.rpartition('.')[0]
        if target and target != name and not name.startswith(target + '.'):
          deps.add(target)   # a module's own package (its __init__) is not a cycle
    graph[name] = deps
  try:
    tuple(graphlib.TopologicalSorter(graph).static_order())
  except graphlib.CycleError as e:
    raise AssertionError(f'import cycle: {" -> ".join(e.args[1])}') from None
