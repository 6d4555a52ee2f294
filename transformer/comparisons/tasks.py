"""The downstream tasks of an architecture comparison, defined once: the data each reads, how a
pretrained model of each family is fine-tuned on it, and how it is scored.

  generation('python_stdlib/docstrings')   code -> docstring summary: BLEU, exact match, loss
  generation('gettext_catalogs/en_de')     English -> German UI messages, where the machine has
                                           the catalogs (otherwise every cell says why not)
  classification(classes=6)                which standard-library package a function comes from
                                           (its source code in, the package name out): accuracy
  classification(classes=6, head=True)     the same examples through a fresh classification head

One protocol for every family (what a row of the table may be compared on):
  data       every task is two fixed files under <experiment>/data/<task>/ (comparisons/corpora.py
             writes them): train.jsonl, what fine-tuning reads, and test.jsonl, the scored list,
             each example with an id
  matched    fine-tuning reads unpacked rows (`data.pack=False`), so with the same batch size,
             steps and seed every family sees the same examples in the same order (not the same
             tokens: an encoder-decoder row holds the source and the target in two streams)
  truncation the source is cut to inputs_len - 1 tokens and the target to targets_len - 1 (+ EOS)
             for every family: the encoder-decoder reads streams of inputs_len and targets_len,
             the decoder one stream of inputs_len + targets_len + 1 with the same cut
             (objectives/seq2seq.py)
  scoring    after fine-tuning, each run scores every test example in a row of its own
             (training/scoring.py, `log.score.file`): the summed target loss and its token
             count, greedy output (BLEU, exact match), or for text-to-text classification the
             label string with the lowest loss among all labels (rank classification), so the
             encoder-decoder and the decoder are scored on the same ids and the same tokens
  heads      an encoder (and a decoder) can also fine-tune a classification head; that is a
             separate task row (`head=True`), scored on the same test ids by its argmax
"""

import dataclasses
import json
import os

from transformer.data import gettext_corpus, stdlib_corpus
from transformer.files import atomic_write

GENERATION, CLASSIFICATION = 'generation', 'classification'
DATA_DIR = 'data'   # inside the experiment directory


@dataclasses.dataclass(frozen=True)
class Task:
  """One downstream task: `kind` generation or classification, its data and stream lengths."""
  kind: str
  source: str = ''                  # generation: where the pairs come from
  metrics: tuple = ()
  inputs_len: int = 128             # source tokens + EOS (every family)
  targets_len: int = 32             # target tokens + EOS (every family)
  classes: int = 0                  # classification: the largest `classes` packages ...
  per_class: int = 0                # ... at most this many functions each
  head: bool = False                # classification through a fresh head, not text-to-text
  eval_examples: int = 256          # the test list's size (at most)
  overrides: dict = dataclasses.field(default_factory=dict)

  def unavailable(self):
    """Why this machine cannot run the task (None when it can)."""
    if self.source.startswith('gettext_catalogs') and not gettext_corpus.catalog_paths():
      return (f'no gettext catalogs in {gettext_corpus.LOCALE_DIR.format(lang="de")} on this '
              'machine')
    return None


def generation(source, *, metrics=('bleu', 'exact_match', 'loss'), inputs_len=128,
               targets_len=32, eval_examples=256, **overrides):
  return Task(GENERATION, source, tuple(metrics), inputs_len, targets_len,
              eval_examples=eval_examples, overrides=overrides)


def classification(*, classes=6, per_class=400, inputs_len=128, targets_len=8, head=False,
                   eval_examples=256, **overrides):
  return Task(CLASSIFICATION, 'stdlib_package', ('accuracy',), inputs_len, targets_len, classes,
              per_class, head, eval_examples, overrides)


def task_file(exp_dir, task_name, split):
  """<experiment>/data/<task>/<split>.jsonl (split: train or test)."""
  return os.path.join(exp_dir, DATA_DIR, task_name, f'{split}.jsonl')


def labels_file(exp_dir, task_name):
  """<experiment>/data/<task>/labels.json: a classification task's label names, in label order."""
  return os.path.join(exp_dir, DATA_DIR, task_name, 'labels.json')


def stream_lengths(task, family):
  """The matched cut (module docstring) as data.seq_len / data.targets_len of `family`."""
  if family == 'encoder_decoder':
    return {'data.seq_len': task.inputs_len, 'data.targets_len': task.targets_len}
  return {'data.seq_len': task.inputs_len + task.targets_len + 1,
          'data.targets_len': task.targets_len}


def finetune_overrides(task_name, task, family, exp_dir):
  """(overrides, None) to fine-tune a `family` model on `task`, or (None, why it cannot)."""
  common = {'data.source': 'jsonl:' + task_file(exp_dir, task_name, 'train'), 'data.pack': False,
            'log.score.file': task_file(exp_dir, task_name, 'test'), 'log.decode.examples': 0,
            'log.decode.strategy': 'greedy', 'log.decode.max_new_tokens': task.targets_len,
            **task.overrides}
  if task.kind == CLASSIFICATION and task.head:
    if family == 'encoder_decoder':
      return None, 'encoder-decoder: an LM head only (scored text-to-text in the other row)'
    return {'objective': 'classification', 'data.text_key': 'text', 'data.label_key': 'label',
            'model.num_classes': task.classes, 'data.seq_len': task.inputs_len, **common}, None
  if family == 'encoder':
    return None, ('encoder-only: no decoder to generate or rank label strings with' +
                  (' (its head is the head row)' if task.kind == CLASSIFICATION else ''))
  keys = ({'data.inputs_key': 'text', 'data.targets_key': 'name',
           'log.score.choices': labels_file(exp_dir, task_name)}
          if task.kind == CLASSIFICATION else
          {'data.inputs_key': 'inputs', 'data.targets_key': 'targets'})
  return {'objective': 'seq2seq', **stream_lengths(task, family), **keys, **common}, None


# -- derived corpora ------------------------------------------------------------------------------
def _write_jsonl(path, records):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:   # Slurm tasks at once
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + '\n')
  return path


def _unit(key):
  """A stable number in [0, 1) from a string (md5, not Python's salted hash)."""
  return stdlib_corpus.stable_hash(key) / 2 ** 32


def package_file(exp_dir):
  return os.path.join(exp_dir, DATA_DIR, 'stdlib_package.jsonl')


def package_examples(classes, per_class, files=None):
  """[{'text': function source, 'label': k, 'name': package}] for the `classes` standard-library
  packages with the most documented functions, at most `per_class` each (a stable choice)."""
  by_package = {}
  for example_id, code, _ in stdlib_corpus.docstring_pairs(files or stdlib_corpus.stdlib_files()):
    rel_path = example_id.split(':')[1]
    if os.sep in rel_path or '/' in rel_path:
      by_package.setdefault(rel_path.replace(os.sep, '/').split('/')[0], []).append(
          (example_id, code))
  names = sorted(by_package, key=lambda p: (-len(by_package[p]), p))[:classes]
  records = []
  for label, name in enumerate(sorted(names)):
    chosen = sorted(by_package[name], key=lambda e: _unit(e[0]))[:per_class]
    records += [{'text': code, 'label': label, 'name': name} for _, code in chosen]
  return sorted(records, key=lambda r: _unit(r['text']))


PREFIX_CHARS = 320   # the prefix's last characters kept: ~128 tokens at 2.5 characters a token


def prefix_pairs(texts, low=0.5, high=0.85, max_chars=PREFIX_CHARS):
  """(prefix, continuation) pairs for an encoder-decoder prefix LM: each text split at a word
  boundary a stable-random fraction low..high of the way in (T5 sec. 3.3.1). The prefix keeps
  its last `max_chars` characters, so the encoder's truncation (which keeps the start) never
  separates it from the continuation; packing fills the rows with several pairs."""
  for text in texts:
    cut = int(len(text) * (low + (high - low) * _unit(text)))
    space = text.find(' ', cut)
    if 0 < space < len(text) - 1:
      start = text.find(' ', max(0, space - max_chars)) + 1 if space > max_chars else 0
      yield {'inputs': text[start:space], 'targets': text[space + 1:]}


def prefix_file(exp_dir):
  return os.path.join(exp_dir, DATA_DIR, 'prefix_lm_python_stdlib_text.jsonl')


def tokenizer_file(exp_dir):
  return os.path.join(exp_dir, DATA_DIR, 'tokenizer_text.txt')


def prepare(exp_dir, tasks, with_prefix):
  """Write the derived corpora the comparison needs (each once); returns their paths."""
  files = list(stdlib_corpus.stdlib_files())
  texts = [t for _, t in stdlib_corpus.text_examples(files)]
  paths = {'tokenizer': tokenizer_file(exp_dir)}
  if not os.path.exists(paths['tokenizer']):
    _write_lines(paths['tokenizer'], tokenizer_texts(texts, tasks, files))
  if with_prefix and not os.path.exists(prefix_file(exp_dir)):
    paths['prefix_lm'] = _write_jsonl(prefix_file(exp_dir), prefix_pairs(texts))
  for task in tasks.values():
    if task.kind == CLASSIFICATION and not os.path.exists(package_file(exp_dir)):
      _write_jsonl(package_file(exp_dir), package_examples(task.classes, task.per_class, files))
  return paths


def tokenizer_texts(texts, tasks, files, extra_ratio=0.25):
  """The lines the comparison's one tokenizer learns from: the pretraining text, plus the
  downstream inputs/targets at up to `extra_ratio` of its size (T5 mixed German, French and
  Romanian into its English SentencePiece data for the same reason: the downstream tasks)."""
  yield from texts
  budget = int(extra_ratio * len(texts))
  extra = []
  for task in tasks.values():
    if task.unavailable():
      continue
    if task.source == 'python_stdlib/docstrings' or task.kind == CLASSIFICATION:
      extra += [code for _, code, _ in stdlib_corpus.docstring_pairs(files)]
    elif task.source.startswith('gettext_catalogs'):
      extra += [t for path in gettext_corpus.catalog_paths()
                for pair in gettext_corpus.catalog_pairs(path) for t in pair[-2:]]
  yield from sorted(set(extra), key=_unit)[:budget]


def _write_lines(path, texts):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    for text in texts:
      line = ' '.join(text.split())
      if line:
        f.write(line + '\n')
