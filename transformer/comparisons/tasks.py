"""The downstream tasks of an architecture comparison, defined once: the data each reads, how a
pretrained model of each family is fine-tuned on it, and what it is scored by.

  generation('python_stdlib/docstrings')   code -> docstring summary: BLEU and exact match
  generation('gettext_catalogs/en_de')     English -> German UI messages, where the machine has
                                           the catalogs (otherwise every cell says why not)
  classification(classes=6)                which standard-library package a function comes from
                                           (its source code in, the package out): accuracy

Every family is scored on every task it can do, the T5 way where it takes text in and out:
  generation       encoder_decoder and decoder (seq2seq objective: encoder -> decoder, or one
                   prefix-LM stream `[bos] source [sep] target`); an encoder-only model has no
                   decoder to generate with, so that cell names the reason instead of a score.
  classification   encoder and decoder fine-tune a fresh classification head (objective
                   classification); an encoder-decoder has an LM head only, so it generates the
                   package name (seq2seq, T5's text-to-text classification) and its accuracy
                   is the exact match of the greedy output on the same eval examples.
Scores: BLEU is the run's last `eval/bleu` (sacrebleu over the decoded eval examples, see
log.decode); 'loss' (a generation task may ask for it) its last `eval/loss`, the teacher-forced
cross-entropy of the target tokens + EOS, which the seq2seq objective scores alike for both
families (the measure that still separates models too small to generate well); exact match
and text-to-text accuracy are recomputed from the same decodes
(<run>/decodes/step_<last>.jsonl); head accuracy is the last `eval/accuracy`.

Derived corpora (the package-classification data, the (prefix, continuation) pairs an
encoder-decoder prefix LM pretrains on, the text the shared tokenizer learns from) are written
as jsonl/text files under <experiment>/data/, read back through `jsonl:` / `text:` sources.
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
  source: str = ''                  # data.source of a generation task
  metrics: tuple = ()
  inputs_len: int = 128
  targets_len: int = 32
  classes: int = 0                  # classification: the largest `classes` packages ...
  per_class: int = 0                # ... at most this many functions each
  overrides: dict = dataclasses.field(default_factory=dict)

  def unavailable(self):
    """Why this machine cannot run the task (None when it can)."""
    if self.source.startswith('gettext_catalogs') and not gettext_corpus.catalog_paths():
      return (f'no gettext catalogs in {gettext_corpus.LOCALE_DIR.format(lang="de")} on this '
              'machine')
    return None


def generation(source, *, metrics=('bleu', 'exact_match'), inputs_len=128, targets_len=32,
               **overrides):
  return Task(GENERATION, source, tuple(metrics), inputs_len, targets_len, overrides=overrides)


def classification(*, classes=6, per_class=400, inputs_len=128, **overrides):
  return Task(CLASSIFICATION, 'stdlib_package', ('accuracy',), inputs_len, 8, classes,
              per_class, overrides)


def finetune_overrides(task, family, exp_dir, decode_examples):
  """(overrides, None) to fine-tune a `family` model on `task`, or (None, why it cannot)."""
  decode = {'log.decode.examples': decode_examples, 'log.decode.strategy': 'greedy',
            'log.decode.max_new_tokens': task.targets_len, 'log.decode.metrics': 'bleu'}
  if task.kind == GENERATION:
    if family == 'encoder':
      return None, 'encoder-only: no decoder to generate text with'
    source = task.source
  else:
    source = 'jsonl:' + package_file(exp_dir)
    if family != 'encoder_decoder':
      return {'objective': 'classification', 'data.source': source, 'data.text_key': 'text',
              'data.label_key': 'label', 'model.num_classes': task.classes,
              'data.seq_len': task.inputs_len, **task.overrides}, None
  lengths = ({'data.seq_len': task.inputs_len, 'data.targets_len': task.targets_len}
             if family == 'encoder_decoder' else
             {'data.seq_len': task.inputs_len + task.targets_len})
  keys = ({'data.inputs_key': 'text', 'data.targets_key': 'name'}
          if task.kind == CLASSIFICATION else {})
  return {'objective': 'seq2seq', 'data.source': source, **keys, **lengths, **decode,
          **task.overrides}, None


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
