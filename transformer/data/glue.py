"""The GLUE tasks as data: their TFDS names and fields, labels, official metrics and T5's
text-to-text format. Pure Python (no TensorFlow): sources.py builds its KNOWN entries from it,
the classification objective reads which sources are pairs, the suite (comparisons/glue.py)
reads metrics and splits.

  TASKS['mnli'].tfds         'glue/mnli'
  TASKS['mnli'].fields       {'text': 'premise', 'text_pair': 'hypothesis', 'label': 'label'}
  TASKS['stsb'].num_classes  1: a regression task (a real-valued label, kind fields.SCORE)
  t5_inputs(TASKS['mnli'], premise, hypothesis)  'mnli hypothesis: ... premise: ...'
  t5_target(TASKS['stsb'], 3.14)                 '3.2' (rounded to 0.2, as the T5 paper did)
  class_of(TASKS['mnli'], 'neutral')             1; a word that is no label: -1 (as T5 scores)

Fields per task are those of the TFDS builder; 'text' and 'text_pair' follow the order BERT and
Hugging Face's run_glue read them in (premise before hypothesis, question before sentence).
T5's input is the task name, then each field as `<tfds field name>: <text>` in sorted field
order (t5.data.preprocessors.glue sorts the feature keys; stsb's preprocessor writes
sentence1 then sentence2), and its target the label's name (ClassLabel names of the TFDS
builder), or for STS-B the score rounded to the nearest 0.2 with one decimal.

Metrics (what the GLUE paper reports per task): CoLA Matthews correlation, MRPC and QQP F1 and
accuracy, STS-B Pearson and Spearman correlation, MNLI accuracy on validation_matched and
validation_mismatched, the others accuracy. Names are the eval/<name> tags the runs log.
"""

import dataclasses
import math

from transformer.data import fields
from transformer.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Task:
  """One GLUE task (see the module docstring)."""
  name: str
  text: str                            # the TFDS field of the first text
  text_pair: str = ''                  # of the second; '' for single-sentence tasks
  labels: tuple = ()                   # label names in id order; () : regression
  metrics: tuple = ('accuracy',)
  eval_splits: tuple = ('validation',)   # TFDS splits it is scored on, the first during training
  benchmark: str = 'glue'

  @property
  def tfds(self):
    return f'{self.benchmark}/{self.name}'

  @property
  def num_classes(self):
    """model.num_classes: the number of labels, 1 for regression (a one-unit head)."""
    return len(self.labels) or 1

  @property
  def regression(self):
    return not self.labels

  @property
  def fields(self):
    """{role: TFDS field} (sources.KNOWN)."""
    out = {'text': self.text, 'label': 'label'}
    if self.text_pair:
      out['text_pair'] = self.text_pair
    return out

  @property
  def kinds(self):
    """{role: kind} its examples are read by (data/fields.py): text, text_pair, the label a
    class id, or a score for regression."""
    kinds = {'text': fields.TEXT, **({'text_pair': fields.TEXT} if self.text_pair else {})}
    return {**kinds, 'label': fields.SCORE if self.regression else fields.LABEL}


_NLI = ('entailment', 'not_entailment')
TASKS = {t.name: t for t in (
    Task('cola', 'sentence', labels=('unacceptable', 'acceptable'), metrics=('mcc',)),
    Task('sst2', 'sentence', labels=('negative', 'positive')),
    Task('mrpc', 'sentence1', 'sentence2', ('not_equivalent', 'equivalent'), ('f1', 'accuracy')),
    Task('qqp', 'question1', 'question2', ('not_duplicate', 'duplicate'), ('f1', 'accuracy')),
    Task('stsb', 'sentence1', 'sentence2', metrics=('pearson', 'spearman')),
    Task('mnli', 'premise', 'hypothesis', ('entailment', 'neutral', 'contradiction'),
         eval_splits=('validation_matched', 'validation_mismatched')),
    Task('qnli', 'question', 'sentence', _NLI),
    Task('rte', 'sentence1', 'sentence2', _NLI),
    Task('wnli', 'sentence1', 'sentence2', ('not_entailment', 'entailment')),
)}
# Higher is better for every one of them (the sweep and search tables read this too).
METRICS = ('accuracy', 'f1', 'mcc', 'pearson', 'spearman')


def by_source(spec):
  """The Task whose TFDS name is `spec` (e.g. 'glue/mrpc'), or None."""
  name = str(spec).split(':')[0]
  return next((t for t in TASKS.values() if t.tfds == name), None)


def get(name, key='data.text_to_text'):
  """TASKS[name], or a one-line ConfigError naming `key` and the tasks."""
  if name not in TASKS:
    raise ConfigError(f'`{key}={name}`: not a GLUE task; choose one of {", ".join(TASKS)}')
  return TASKS[name]


def t5_inputs(task, text, text_pair=''):
  """T5's input string of one example (module docstring)."""
  named = {task.text: text, **({task.text_pair: text_pair} if task.text_pair else {})}
  return ' '.join([task.name] + [f'{key}: {named[key]}' for key in sorted(named)])


def t5_target(task, label):
  """T5's target string: the label's name, or a score rounded to 0.2 with one decimal (numpy's
  and TensorFlow's rounding: half to even)."""
  if task.regression:
    import numpy as np  # pylint: disable=import-outside-toplevel
    return f'{float(np.round(float(label) * 5) / 5):.1f}'
  return task.labels[int(label)]


def class_of(task, text):
  """A decoded T5 target back as a label: the class id of a label name (-1 for any other
  text), or the number a regression target reads as (-1.0 when it is none), as T5 scores."""
  text = str(text).strip()
  if task.regression:
    try:
      value = float(text)
    except ValueError:
      return -1.0
    return value if math.isfinite(value) else -1.0
  return task.labels.index(text) if text in task.labels else -1
