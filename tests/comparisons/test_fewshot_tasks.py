"""comparisons/fewshot.py: the k shots are fixed by the seed and never the scored example, the
prompt reads as documented, length normalisation picks by hand-computed scores, jsonl records
are checked key by key, and the embedded task scores held-out module files only."""

import json
import os

import pytest

from transformer.comparisons import corpora
from transformer.comparisons import fewshot as tasks_lib
from transformer.data import stdlib_corpus
from transformer.errors import ConfigError
from transformer.training.fewshot import Scored


def _task(n=12):
  examples = [{'id': str(i), 'context': f'q{i}', 'choices': [f'a{i}', f'b{i}'], 'label': i % 2}
              for i in range(n)]
  return tasks_lib.Task('t', tasks_lib.CHOICE, train=examples, test=examples[:6],
                        train_source='t.jsonl')


def test_shots_are_fixed_by_the_seed_and_never_the_example():
  task = _task()
  for i, example in enumerate(task.test):
    shown = tasks_lib.shots(task, i, 5, seed=3)
    assert example['id'] not in {e['id'] for e in shown} and len({e['id'] for e in shown}) == 5
    assert shown == tasks_lib.shots(task, i, 5, seed=3)
  draws = {tuple(e['id'] for e in tasks_lib.shots(task, 0, 5, seed=s)) for s in range(5)}
  assert len(draws) > 1   # the seed chooses
  assert tasks_lib.shots(task, 0, 11, seed=0)   # all 11 others
  with pytest.raises(ConfigError, match=r'`--fewshot 12`: larger than the 11 examples.*t\.jsonl'):
    tasks_lib.shots(task, 0, 12, seed=0)


def test_the_prompt_and_continuations_read_as_documented():
  task = _task()
  shown = [task.train[7], task.train[8]]
  assert tasks_lib.prompt(task, task.test[0], shown) == 'q7 b7\n\nq8 a8\n\nq0'
  assert tasks_lib.continuations(task, task.test[0]) == [' a0', ' b0']


def test_length_normalisation_by_hand():
  """Summed log-likelihoods -6, -4, -4.5 over 2, 1, 3 tokens and 12, 1, 6 characters:
  raw picks -4 (choice 1); per token -3, -4, -1.5 picks 2; per char -0.5, -4, -0.75 picks 0."""
  example = {'id': 'x', 'context': 'c', 'choices': ['a' * 12, 'b', 'c' * 6], 'label': 2}
  scored = [Scored(-6.0, 2, False, False), Scored(-4.0, 1, False, False),
            Scored(-4.5, 3, False, False)]
  record = tasks_lib.choice_record(example, scored)
  assert (record['prediction'], record['prediction_per_token'], record['prediction_per_char']) \
      == (1, 2, 0)
  assert (record['correct'], record['correct_per_token'], record['correct_per_char']) == (0, 1, 0)
  task = _task()
  assert tasks_lib.summary(task, [record, {**record, 'correct': 1}]) == {
      'accuracy': 50.0, 'accuracy_per_token': 100.0, 'accuracy_per_char': 0.0}


def _jsonl(path, records):
  with open(path, 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in records))
  return str(path)


@pytest.mark.parametrize('records,needle', [
    ([{'context': 'x', 'choices': ['a', 'b'], 'label': 0}, {'context': 'y', 'label': 1}],
     'line 2 has no "choices"'),
    ([{'context': 'x', 'choices': ['a', 'b']}], 'line 1 has no "label"'),
    ([{'context': 'x', 'choices': ['a', 'b'], 'label': -1}], '"label" -1 is not an index'),
    ([{'context': 'x', 'choices': ['a', 'b'], 'label': True}], '"label" True'),
    ([{'context': 'x', 'choices': 'ab', 'label': 0}], '"choices" non-empty text'),
    ([{'context': 'x'}], 'neither "choices" and "label" nor "completion"'),
    ([{'context': 'x', 'completion': 'y'}, {'completion': 'z'}], 'line 2 has no "context"'),
])
def test_bad_jsonl_records_are_one_line_naming_the_file_and_key(tmp_path, records, needle):
  path = _jsonl(tmp_path / 'task.jsonl', records)
  with pytest.raises(ConfigError) as e:
    tasks_lib.load(path)
  assert str(e.value).startswith(path) and needle in str(e.value) and '\n' not in str(e.value)


def test_a_jsonl_task_takes_shots_from_train_jsonl_beside_it(tmp_path):
  test = _jsonl(tmp_path / 'test.jsonl', [{'context': 'x', 'completion': 'y'}])
  assert tasks_lib.load(test).train == []
  _jsonl(tmp_path / 'train.jsonl', [{'id': 'a', 'context': 'p', 'completion': 'q'}])
  task = tasks_lib.load(test)
  assert task.kind == tasks_lib.COMPLETION and [e['id'] for e in task.train] == ['a']
  assert task.test[0]['id'] == f'{test}:1'
  assert tasks_lib.load(test, fewshot=0).train == []   # zero-shot never reads it
  with pytest.raises(ConfigError, match='--task nothing: neither a task name'):
    tasks_lib.load('nothing')


@pytest.fixture(scope='module')
def stdlib_files():
  """The email and json packages and a dozen top-level modules (a few seconds to read)."""
  files = list(stdlib_corpus.stdlib_files())
  return ([f for f in files if f[0].split(os.sep)[0] in ('email', 'json', 'http')] +
          [f for f in files if os.sep not in f[0]][:12])


def test_the_embedded_task_scores_held_out_modules_only(stdlib_files):
  task = tasks_lib.stdlib_docstrings(stdlib_files)
  held = corpora.heldout_groups(stdlib_files)
  assert task.test and task.train
  assert all(corpora.group_of(e['id']) in held for e in task.test)
  assert not any(corpora.group_of(e['id']) in held for e in task.train)
  train_answers = {tasks_lib.answer(e) for e in task.train}
  for example in task.test:
    assert len(set(example['choices'])) == 4 and tasks_lib.answer(example) not in train_answers
    assert example['context'] == example['id'].rsplit(':', 1)[1]   # the qualified name
  assert len({e['label'] for e in task.test}) > 1
  again = tasks_lib.stdlib_docstrings(stdlib_files)
  assert again.test == task.test   # stable: the same choices in the same places
