"""The comparison's corpora, split so that nothing a task is scored on was seen before scoring.

The embedded corpus (transformer/data/stdlib_corpus.py) is the standard library's docstrings,
and the docstring task asks a model for a function's docstring summary: pretraining on every
docstring (as the comparison once did) trains p(summary | qualified name) on the very answers
it later scores (a review found 286 of 307 validation targets verbatim in the pretraining
text), and a tokenizer trained on the eval inputs has seen them too. So the data is split by
GROUP, one standard-library module file ('email/parser.py', 'os.py'):

  heldout   ~15% of the module files (a stable hash of the path, HELDOUT_PERCENT); every test
            example of the docstring and package tasks comes from these files only, and their
            docstrings are not in the pretraining text. Groups are module files, not packages,
            so package classification keeps every class on both sides ('email/parser.py' held
            out, 'email/message.py' not; a package whose files fell on one side gives one file
            to the other).
  pretrain  the other files: the pretraining text (their docstrings, plus the language
            reference, which no task asks about) and every task's training examples.
Translation (gettext catalogs, not in the pretraining text) splits by the English message: the
same message never sits on both sides, and the tokenizer never reads a test pair.

Then decontamination drops every test example whose target or input (classification: input
only; its target is a class name) shares a whitespace-token n-gram (8 tokens, or the whole text
when shorter: comparisons/overlap.py) with the pretraining text or the tokenizer's text; the
count dropped is recorded.

`prepare(exp_dir, tasks, corpus)` writes under <exp_dir>/data/ (each file once, whole):
  pretrain.jsonl                     {"id", "text"}: read as `jsonl:` with data.text_key=text
                                     (the pretraining text of the EMBEDDED corpus; the
                                     tokenizer's text whatever the corpus)
  <task>/train.jsonl, test.jsonl     generation {"id", "inputs", "targets"}; classification
                                     {"id", "text", "label", "name"} and <task>/labels.json;
                                     test: a fixed list of Task.eval_examples (stable-hash order;
                                     classification round-robin over the classes)
  tokenizer_text.txt                 the pretraining text + TRAINING inputs/targets (never test)
  overlap.json, overlap.md           `overlap_report`: per task, what remains after the split
                                     (a TFDS corpus is not scanned, and the report says so)
  manifest.json                      Python and stdlib, catalogs, sha256 of every file above
                                     (the experiment's manifest.json, manifest.py, adds the
                                     code, packages and devices)
The task files are where tasks.task_file / labels_file say: fine-tuning reads train.jsonl and
every run scores test.jsonl (the protocol of comparisons/tasks.py).

The corpus a comparison pretrains on (SCALES[scale]['corpus'], or --corpus): EMBEDDED, the
pretrain.jsonl above, or a TFDS name (`c4/en`, read as data.source names it). The prefix-LM
cells of both families read (prefix, continuation) pairs of either through the one rule of
data/prefix_pairs.py (`data.prefix_pairs=True`). A TFDS corpus must be prepared in the TFDS
data_dir before a comparison runs (plan.check_corpus: one line otherwise; nothing downloads it).
"""

import json
import os
import platform
import sys
import sysconfig

from transformer.comparisons import manifest as manifest_lib
from transformer.comparisons import overlap
from transformer.comparisons import tasks as compare_tasks
from transformer.data import gettext_corpus, prefix_pairs as prefix_pairs_lib, stdlib_corpus
from transformer.data import tokenizer as tokenizer_lib
from transformer.files import atomic_write

HELDOUT_PERCENT = 15         # of module files (groups), by a stable hash of the path
TOKENIZER_EXTRA = 0.25       # task training text in the tokenizer's text, per pretraining line
EPOCHS_LIMIT = 4             # pretraining past this many passes warns (Muennighoff et al. 2023)
PREFIX_CHARS = prefix_pairs_lib.MAX_CHARS   # a prefix pair's last characters kept
EMBEDDED = 'embedded'        # the pretraining corpus written here (pretrain.jsonl)
DOCSTRINGS, TRANSLATE = 'python_stdlib/docstrings', 'gettext_catalogs/en_de'
overlap_report = overlap.overlap_report


# -- paths ----------------------------------------------------------------------------------------
def data_path(exp_dir, *parts):
  return os.path.join(exp_dir, compare_tasks.DATA_DIR, *parts)


def pretrain_file(exp_dir):
  return data_path(exp_dir, 'pretrain.jsonl')


def tokenizer_file(exp_dir):
  return data_path(exp_dir, 'tokenizer_text.txt')


def manifest_file(exp_dir):
  return data_path(exp_dir, 'manifest.json')


# -- the group split ------------------------------------------------------------------------------
def _unit(key):
  """A stable number in [0, 1) from a string (md5, not Python's salted hash)."""
  return stdlib_corpus.stable_hash(key) / 2 ** 32


def group_of(example_id):
  """The module file of a stdlib example id ('fn:email/parser.py:12:...' -> 'email/parser.py');
  None for text of no module (the language reference)."""
  kind, _, rest = example_id.partition(':')
  return rest.split(':')[0].replace(os.sep, '/') if kind in ('fn', 'doc') else None


def package_of(group):
  """'email/parser.py' -> 'email'; a top-level module ('os.py') has no package (None)."""
  return group.split('/')[0] if '/' in group else None


def heldout_groups(files, percent=HELDOUT_PERCENT):
  """The held-out module files: a stable hash puts ~`percent`% there. Then, so that package
  classification has every class on both sides, a package with functions in 2+ files holds out
  (its files in hash order) at least half its share of functions and keeps at least one file."""
  groups = sorted(rel.replace(os.sep, '/') for rel, _ in files)
  held = {g for g in groups if stdlib_corpus.stable_hash('heldout:' + g) % 100 < percent}
  functions = {}
  for example_id, _, _ in stdlib_corpus.docstring_pairs(files):
    group = group_of(example_id)
    functions[group] = functions.get(group, 0) + 1
  by_package = {}
  for group in functions:
    if package_of(group):
      by_package.setdefault(package_of(group), []).append(group)
  for members in by_package.values():
    ranked = sorted(members, key=lambda g: stdlib_corpus.stable_hash('heldout:' + g))
    floor = max(1, percent * sum(functions[g] for g in members) // 200)
    for group in ranked[:-1]:
      if sum(functions[g] for g in members if g in held) >= floor:
        break
      held.add(group)
    if len(ranked) > 1 and set(ranked) <= held:
      held.discard(ranked[-1])
  return frozenset(held)


def pretrain_records(files, held):
  """{"id", "text"} of the pretraining text: docstrings of the pretrain files + the reference."""
  return [{'id': i, 'text': t} for i, t in stdlib_corpus.text_examples(files)
          if group_of(i) not in held]


# -- task examples: (train records, test candidates) ----------------------------------------------
def docstring_split(files, held):
  pairs = [{'id': i, 'inputs': x, 'targets': y} for i, x, y in stdlib_corpus.docstring_pairs(files)]
  return ([p for p in pairs if group_of(p['id']) not in held],
          [p for p in pairs if group_of(p['id']) in held])


def package_split(files, held, classes, per_class):
  """The `classes` packages with the most documented functions: training examples (at most
  `per_class` each, pretrain files) and test candidates (held-out files); and the names."""
  by_package = {}
  for example_id, code, _ in stdlib_corpus.docstring_pairs(files):
    package = package_of(group_of(example_id))
    if package:
      by_package.setdefault(package, []).append((example_id, code))
  names = sorted(sorted(by_package, key=lambda p: (-len(by_package[p]), p))[:classes])
  train, test = [], []
  for label, name in enumerate(names):
    records = [{'id': i, 'text': code, 'label': label, 'name': name}
               for i, code in sorted(by_package[name], key=lambda e: _unit(e[0]))]
    train += [r for r in records if group_of(r['id']) not in held][:per_class]
    test += [r for r in records if group_of(r['id']) in held]
  return sorted(train, key=lambda r: _unit(r['id'])), test, names


def package_examples(classes, per_class, files=None):
  """[{'id', 'text', 'label', 'name'}]: every package-classification example of the pretrain
  files (the training examples; `files` defaults to the whole standard library)."""
  files = list(files or stdlib_corpus.stdlib_files())
  return package_split(files, heldout_groups(files), classes, per_class)[0]


def translate_split(catalogs, percent=HELDOUT_PERCENT):
  """gettext pairs (repeats dropped) split by a stable hash of the English message."""
  seen, train, test = set(), [], []
  for path in catalogs:
    for example_id, english, german in gettext_corpus.catalog_pairs(path):
      if (english, german) in seen:
        continue
      seen.add((english, german))
      held = stdlib_corpus.stable_hash('msgid:' + english) % 100 < percent
      (test if held else train).append({'id': example_id, 'inputs': english, 'targets': german})
  return train, test


def choose_test(candidates, count, by_class=False):
  """`count` candidates in stable-hash order of their ids; by_class: round-robin over the
  labels (each in hash order), so every class is in the test set."""
  ordered = sorted(candidates, key=lambda r: _unit(r['id']))
  if by_class:
    queues = {}
    for record in ordered:
      queues.setdefault(record['label'], []).append(record)
    rounds = max((len(q) for q in queues.values()), default=0)
    ordered = [q[k] for k in range(rounds) for _, q in sorted(queues.items()) if k < len(q)]
  return ordered[:count]


def prefix_pairs(texts, max_chars=PREFIX_CHARS):
  """{'inputs': prefix, 'targets': continuation} of each text by the rule every prefix-LM cell
  reads its pairs with (data/prefix_pairs.py: `split`, T5 sec. 3.3.1)."""
  for text in texts:
    prefix, continuation = prefix_pairs_lib.split(text, max_chars=max_chars)
    yield {'inputs': prefix, 'targets': continuation}


def is_tfds(corpus):
  return corpus != EMBEDDED


def tokenizer_texts(texts, train_extra, extra_ratio=TOKENIZER_EXTRA):
  """The lines the comparison's one tokenizer learns from: the pretraining text, plus task
  TRAINING text at up to `extra_ratio` of its lines (T5 mixed German, French and Romanian into
  its English SentencePiece data for its downstream tasks); never a test example."""
  yield from texts
  yield from sorted(set(train_extra), key=_unit)[:int(extra_ratio * len(texts))]


def epochs_warning(tokens_seen, corpus_tokens, limit=EPOCHS_LIMIT, name='pretraining'):
  """A '[compare]' line when pretraining reads more than `limit` passes of its corpus (repeated
  data stops paying after ~4 epochs, Muennighoff et al. 2023); None otherwise."""
  epochs = tokens_seen / max(corpus_tokens, 1)
  if epochs <= limit:
    return None
  return (f'[compare] warning: {name} reads {tokens_seen:,} tokens, {epochs:.1f} epochs of '
          f'its {corpus_tokens:,}-token corpus (over {limit}): the cells are compared on '
          'repeated data; use a larger corpus or fewer steps')


def warn_epochs(exp_dir, budget, tokenizer_path):
  """Print (and return) `epochs_warning` of every cell of a plan's budget {cell:
  {tokens_per_step, steps}} against the pretraining text in the shared tokenizer's pieces."""
  corpus = corpus_tokens(os.path.abspath(exp_dir), tokenizer_path)
  found = (epochs_warning(row['tokens_per_step'] * row['steps'], corpus, name=cell)
           for cell, row in budget.items())
  lines = [line for line in found if line]
  for line in lines:
    print(line, flush=True)
  return lines


def corpus_tokens(exp_dir, tokenizer_path):
  """The pretraining text's length in the shared tokenizer's pieces."""
  texts = [r['text'] for r in read_jsonl(pretrain_file(exp_dir))]
  return sum(map(len, tokenizer_lib.load(tokenizer_path).encode_batch(texts)))


# -- writing --------------------------------------------------------------------------------------
def _write_jsonl(path, records):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:   # Slurm tasks at once
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + '\n')
  return path


def _write_lines(path, texts):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    for text in texts:
      line = ' '.join(text.split())
      if line:
        f.write(line + '\n')
  return path


def _write_json(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1, ensure_ascii=False, sort_keys=True)
    f.write('\n')
  return path


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


# -- prepare --------------------------------------------------------------------------------------
def _derived(task, catalogs):
  """Whether `task` reads data written here (not another source; translation needs catalogs)."""
  return (task.kind == compare_tasks.CLASSIFICATION or task.source == DOCSTRINGS or
          (task.source == TRANSLATE and bool(catalogs)))


def _task_split(task, files, held, catalogs):
  """{train, candidates, checked (the fields decontamination tests), labels} of one task; None
  for a task with no derived data."""
  if not _derived(task, catalogs):
    return None
  if task.kind == compare_tasks.CLASSIFICATION:
    train, candidates, names = package_split(files, held, task.classes, task.per_class)
    return {'train': train, 'candidates': candidates, 'checked': ('text',), 'labels': names,
            'extra': [r['text'] for r in train]}
  if task.source == DOCSTRINGS:
    train, candidates = docstring_split(files, held)
  else:
    train, candidates = translate_split(catalogs)
  return {'train': train, 'candidates': candidates, 'checked': ('targets', 'inputs'),
          'labels': None,
          'extra': [t for r in train for t in (r['inputs'], r['targets'])]}


def build(tasks, files, catalogs):
  """Everything `prepare` writes, in memory: {path relative to data/: records or lines}, the
  per-task dropped counts and the held-out groups."""
  held = heldout_groups(files)
  pretrain = pretrain_records(files, held)
  texts = [r['text'] for r in pretrain]
  splits = {name: s for name, task in tasks.items()
            if (s := _task_split(task, files, held, catalogs)) is not None}
  tokenizer = list(tokenizer_texts(texts, [t for s in splits.values() for t in s['extra']]))
  every = [(name, r) for name, s in splits.items() for r in s['candidates']]
  checked = [(k, r[field]) for k, (name, r) in enumerate(every)
             for field in splits[name]['checked']]
  # the tokenizer's lines are the pretraining texts (whitespace aside) and the training extra
  bad = {checked[i][0] for i in overlap.overlapping([t for _, t in checked], tokenizer)}
  out = {'pretrain.jsonl': pretrain, 'tokenizer_text.txt': tokenizer}
  dropped = {}
  for name, split in splits.items():
    clean = [r for k, (task, r) in enumerate(every) if task == name and k not in bad]
    dropped[name] = len(split['candidates']) - len(clean)
    out[f'{name}/train.jsonl'] = split['train']
    out[f'{name}/test.jsonl'] = choose_test(clean, tasks[name].eval_examples,
                                            by_class=split['labels'] is not None)
    if split['labels'] is not None:
      out[f'{name}/labels.json'] = split['labels']
  return out, dropped, held


def _write(path, value):
  """A file of `value` by its name: .txt lines, .jsonl records, .json a value; a str as it is."""
  if isinstance(value, str):
    with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
      f.write(value)
    return path
  if path.endswith('.txt'):
    return _write_lines(path, value)
  return _write_jsonl(path, value) if path.endswith('.jsonl') else _write_json(path, value)


def prepare(exp_dir, tasks, corpus=EMBEDDED, files=None, catalogs=None):
  """Write the comparison's corpora under <exp_dir>/data/ (see the module docstring), each file
  only when absent; then the overlap report of the files as written (against `corpus`, the
  pretraining corpus: a TFDS one is recorded as not scanned) and the manifest. `files`
  ((relative path, source), default the whole standard library) and `catalogs` (.mo paths,
  default this machine's German ones) narrow the inputs for tests. Returns {name: path}."""
  catalogs = list(gettext_corpus.catalog_paths() if catalogs is None else catalogs)
  done = [manifest_file(exp_dir)] + [compare_tasks.task_file(exp_dir, name, 'test')
                                     for name, task in tasks.items() if _derived(task, catalogs)]
  if all(map(os.path.exists, done)):
    return {os.path.relpath(p, data_path(exp_dir)): p for p in done}   # an earlier call's
  files = list(stdlib_corpus.stdlib_files() if files is None else files)
  out, dropped, held = build(tasks, files, catalogs)
  paths = _write_absent(exp_dir, out)
  tests = {name: read_jsonl(compare_tasks.task_file(exp_dir, name, 'test')) for name in dropped}
  pretrain = [r['text'] for r in read_jsonl(pretrain_file(exp_dir))]
  with open(tokenizer_file(exp_dir), encoding='utf-8') as f:
    tokenizer = f.read().splitlines()
  scanned = None if is_tfds(corpus) else pretrain   # of the files as they are
  report = overlap_report(tests, scanned, tokenizer, dropped, corpus=corpus)
  paths.update(_write_absent(exp_dir, {'overlap.json': report,
                                       'overlap.md': overlap.report_markdown(report)}))
  paths.update(_write_absent(exp_dir, {'manifest.json': manifest(exp_dir, paths, files,
                                                                 catalogs, held)}))
  return paths


def _write_absent(exp_dir, values):
  """Write each {path under data/: value} that is not there yet; {path: full path}."""
  paths = {}
  for rel, value in values.items():
    paths[rel] = data_path(exp_dir, rel)
    if not os.path.exists(paths[rel]):
      _write(paths[rel], value)
  return paths


def manifest(exp_dir, paths, files, catalogs, held):
  """The environment facts the data depend on, and a sha256 of every written file."""
  return {
      'python_version': platform.python_version(), 'sys_version': sys.version,
      'stdlib_path': stdlib_corpus.STDLIB_ROOT or sysconfig.get_paths()['stdlib'],
      'stdlib_files': len(files), 'heldout_percent': HELDOUT_PERCENT,
      'heldout_groups': sorted(held),
      'gettext_locale_dir': gettext_corpus.LOCALE_DIR.format(lang='de'),
      'gettext_catalogs': [os.path.basename(p) for p in catalogs],
      'sha256': {os.path.relpath(p, data_path(exp_dir)): manifest_lib.sha256(p)
                 for _, p in sorted(paths.items())},
  }
