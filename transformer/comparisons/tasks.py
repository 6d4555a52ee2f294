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
import os

from transformer.data import gettext_corpus

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
