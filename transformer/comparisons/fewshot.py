"""Zero- and few-shot tasks: their examples, prompt formats, k shots and metrics (GPT-3 sec. 2;
the evaluation harnesses' multiple choice and greedy completion). Scoring is
training/fewshot.py; `./launch.sh eval --task NAME_OR_JSONL --fewshot K` runs both.

A Task has a kind, a train split (where shots come from), a test split (what is scored) and its
prompt format. Examples are dicts:
  choice      {"id", "context", "choices": [str, ...], "label": k}   the answer is choices[k]
  completion  {"id", "context", "completion": str}                    cloze / completion
The prompt of a test example with k shots, and what is scored after it:
  prompt        description + shot_1 + fewshot_delimiter + ... + shot_k + fewshot_delimiter
                + context, a shot being its context + target_delimiter + its answer
  continuation  target_delimiter + choice (every choice) | target_delimiter + completion
Shots: k train examples drawn without replacement by numpy's Generator seeded with (seed,
the test example's index), never one with the test example's id or context (a train file that
holds the test example cannot show it its answer). k larger than that leaves is a ConfigError.

Tasks by name or file:
  stdlib_docstrings  embedded multiple choice: a standard-library function's qualified name ->
                     its docstring summary among four (three other held-out summaries, drawn
                     by a stable hash of the id). Test: functions of the held-out module files
                     of comparisons/corpora.py (never in its pretraining text), a summary that a
                     train function also has dropped; train: the other module files. The
                     prompt reads as the `python_stdlib/text` corpus does ("name\\n\\nsummary").
  FILE.jsonl         one example per line (kind from the first record; "id" optional: FILE:LINE);
                     shots from --train_file, by default train.jsonl beside FILE. Prompt:
                     target_delimiter ' ', fewshot_delimiter '\\n\\n', no description (the
                     harnesses' defaults): write the context as the prompt should read, without
                     a trailing space (the delimiter puts one before the answer).
Metrics (in %): choice: accuracy (the summed log-likelihood's argmax), accuracy_per_token
(divided by the continuation's tokens, as GPT-3 does for most tasks) and accuracy_per_char
(divided by the choice's characters, without the delimiter: the harnesses' acc_norm);
completion: exact_match (greedy) and the completions' loss per token.
"""

import dataclasses
import json
import os

import numpy as np

from transformer.comparisons import corpora
from transformer.data import stdlib_corpus
from transformer.errors import ConfigError

CHOICE, COMPLETION = 'choice', 'completion'


@dataclasses.dataclass
class Task:
  name: str
  kind: str                      # choice | completion
  train: list                    # examples the shots come from
  test: list                     # examples scored
  target_delimiter: str = ' '    # between a context and its answer
  fewshot_delimiter: str = '\n\n'   # between shots, and before the scored context
  description: str = ''          # text before the first shot
  train_source: str = ''         # where the train split was read (for errors)


def answer(example):
  return example['completion'] if 'completion' in example else example['choices'][example['label']]


def shots(task, index, k, seed):
  """The k train examples shown before test example `index` (see the module docstring)."""
  if k <= 0:
    return []
  example = task.test[index]
  pool = [e for e in task.train
          if e['id'] != example['id'] and e['context'] != example['context']]
  if k > len(pool):
    raise ConfigError(f'`--fewshot {k}`: larger than the {len(pool)} examples of the train split '
                      f'({task.train_source}) left for example {example["id"]}; ask for at most '
                      f'{len(pool)} shots')
  picked = np.random.default_rng([seed, index]).choice(len(pool), size=k, replace=False)
  return [pool[i] for i in picked]


def prompt(task, example, shown):
  """The text before the continuation: description, shots, then the example's context."""
  parts = [e['context'] + task.target_delimiter + answer(e) for e in shown]
  return task.description + ''.join(p + task.fewshot_delimiter for p in parts) + example['context']


def continuations(task, example):
  """The continuation texts scored after the prompt: one per choice, or the completion."""
  texts = example['choices'] if task.kind == CHOICE else [example['completion']]
  return [task.target_delimiter + t for t in texts]


# -- metrics -----------------------------------------------------------------------------------
def choice_record(example, scored):
  """The per-example record of a multiple-choice example from its choices' Scored values."""
  lls = [s.loglikelihood for s in scored]
  tokens = [s.tokens for s in scored]
  chars = [len(c) for c in example['choices']]
  picks = {'': int(np.argmax(lls)),
           '_per_token': int(np.argmax(np.divide(lls, tokens))),
           '_per_char': int(np.argmax(np.divide(lls, np.maximum(chars, 1))))}
  record = {'id': example['id'], 'label': example['label'], 'loglikelihoods': lls,
            'tokens': tokens, 'chars': chars, 'truncated': any(s.truncated for s in scored)}
  for suffix, pick in picks.items():
    record[f'prediction{suffix}'] = pick
    record[f'correct{suffix}'] = int(pick == example['label'])
  return record


def completion_record(example, scored):
  (s,) = scored
  return {'id': example['id'], 'loglikelihood': s.loglikelihood, 'tokens': s.tokens,
          'exact_match': int(s.greedy), 'truncated': s.truncated}


def summary(task, records):
  """{metric: value}: accuracies (%) for choice tasks, exact match (%) and loss for completion."""
  n = max(len(records), 1)
  if task.kind == CHOICE:
    return {f'accuracy{s}': 100.0 * sum(r[f'correct{s}'] for r in records) / n
            for s in ('', '_per_token', '_per_char')}
  tokens = sum(r['tokens'] for r in records)
  return {'exact_match': 100.0 * sum(r['exact_match'] for r in records) / n,
          'loss': -sum(r['loglikelihood'] for r in records) / max(tokens, 1)}


# -- jsonl tasks ---------------------------------------------------------------------------------
def _kind(path, record):
  if 'choices' in record or 'label' in record:
    return CHOICE
  if 'completion' in record:
    return COMPLETION
  raise ConfigError(f'{path}: line 1 has neither "choices" and "label" nor "completion"; write '
                    '{"context": ..., "choices": [...], "label": k} or '
                    '{"context": ..., "completion": ...} per line')


def _check(path, lineno, record, kind):
  """One line naming the file, the line and the key of a record that is not of `kind`."""
  where = f'{path}: line {lineno}'
  keys = ('context', 'choices', 'label') if kind == CHOICE else ('context', 'completion')
  for key in keys:
    if key not in record:
      raise ConfigError(f'{where} has no "{key}"; a {kind} record holds ' +
                        ', '.join(f'"{k}"' for k in keys))
  texts = record['choices'] if kind == CHOICE else [record['completion']]
  if not isinstance(record['context'], str) or not isinstance(texts, list) or not texts or not all(
      isinstance(t, str) and t for t in texts):
    raise ConfigError(f'{where}: "context" must be a string and "{keys[1]}" non-empty text'
                      + (' (a list of strings)' if kind == CHOICE else ''))
  label = record.get('label')
  if kind == CHOICE and (isinstance(label, bool) or not isinstance(label, int)
                         or not 0 <= label < len(texts)):
    raise ConfigError(f'{where}: "label" {label!r} is not an index into its {len(texts)} '
                      f'"choices"; give 0 to {len(texts) - 1}')


def read_jsonl(path, kind=None):
  """(kind, examples) of a jsonl task file; one-line ConfigErrors naming the file and key."""
  try:
    with open(path, encoding='utf-8') as f:
      lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
  except OSError as e:
    raise ConfigError(f'{path}: cannot read it ({e.strerror}); give a jsonl task file') from None
  examples = []
  for lineno, line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      raise ConfigError(f'{path}: line {lineno} is not JSON; one JSON object per line') from None
    if not isinstance(record, dict):
      raise ConfigError(f'{path}: line {lineno} is not a JSON object')
    kind = kind or _kind(path, record)
    _check(path, lineno, record, kind)
    examples.append({**record, 'id': str(record.get('id', f'{path}:{lineno}'))})
  if not examples:
    raise ConfigError(f'{path}: holds no examples')
  return kind, examples


def jsonl_task(path, train_file=None, with_train=True):
  """The Task of a jsonl file; its train split (read only `with_train`) from `train_file`
  (default train.jsonl beside it; none when absent, so only zero-shot runs)."""
  kind, test = read_jsonl(path)
  if not with_train:
    return Task(os.path.splitext(os.path.basename(path))[0], kind, [], test)
  beside = os.path.join(os.path.dirname(os.path.abspath(path)), 'train.jsonl')
  if train_file is None and os.path.isfile(beside) and beside != os.path.abspath(path):
    train_file = beside
  if train_file and not os.path.isfile(train_file):
    raise ConfigError(f'--train_file {train_file}: no such file; give the task\'s train split')
  train = read_jsonl(train_file, kind)[1] if train_file else []
  name = os.path.splitext(os.path.basename(path))[0]
  return Task(name, kind, train, test, train_source=train_file or f'no train.jsonl beside {path}')


# -- the embedded task ---------------------------------------------------------------------------
def _name(example_id):
  """'fn:email/parser.py:12:email.parser.Parser.parse' -> 'email.parser.Parser.parse'."""
  return example_id.rsplit(':', 1)[1]


def _with_choices(record, pool, n):
  """A test example: the record's summary among n - 1 others of `pool`, at a stable place."""
  rng = np.random.default_rng(stdlib_corpus.stable_hash('choices:' + record['id']))
  others = [s for s in pool if s != record['targets']]
  choices = [others[i] for i in rng.choice(len(others), size=n - 1, replace=False)]
  label = int(rng.integers(n))
  choices.insert(label, record['targets'])
  return {'id': record['id'], 'context': _name(record['id']), 'choices': choices, 'label': label}


def stdlib_docstrings(files=None, num_choices=4):
  """The embedded multiple-choice task (see the module docstring); `files` (relative path,
  source) default to the whole standard library (about 20 s to read)."""
  files = list(stdlib_corpus.stdlib_files() if files is None else files)
  train, candidates = corpora.docstring_split(files, corpora.heldout_groups(files))
  seen = {r['targets'] for r in train}
  test = [r for r in corpora.choose_test(candidates, len(candidates)) if r['targets'] not in seen]
  pool = sorted({r['targets'] for r in test})
  if len(pool) < num_choices:
    raise ConfigError(f'stdlib_docstrings: {len(pool)} held-out summaries, fewer than '
                      f'{num_choices} choices; read more of the standard library')
  return Task('stdlib_docstrings', CHOICE,
              [{'id': r['id'], 'context': _name(r['id']), 'choices': [r['targets']], 'label': 0}
               for r in train],
              [_with_choices(r, pool, num_choices) for r in test],
              target_delimiter='\n\n', fewshot_delimiter='\n\n',
              train_source='stdlib_docstrings train: functions of the pretraining module files')


TASKS = {'stdlib_docstrings': stdlib_docstrings}


def load(name_or_path, *, train_file=None, limit=0, fewshot=1):
  """The Task named (TASKS) or held in a .jsonl file; `limit` > 0 keeps its first test examples;
  a jsonl task's train split is read only for `fewshot` > 0."""
  if name_or_path in TASKS:
    if train_file:
      raise ConfigError(f'--train_file {train_file}: only for jsonl tasks; '
                        f'{name_or_path} has its own train split')
    task = TASKS[name_or_path]()
  elif name_or_path.endswith('.jsonl') and os.path.isfile(name_or_path):
    task = jsonl_task(name_or_path, train_file, with_train=fewshot > 0)
  else:
    raise ConfigError(f'--task {name_or_path}: neither a task name ({", ".join(TASKS)}) nor a '
                      '.jsonl file; give one of those names or the path of a jsonl task file')
  if limit > 0:
    task.test = task.test[:limit]
  return task
