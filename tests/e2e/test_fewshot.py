"""`./launch.sh eval --task ... --fewshot K` end to end on a random GPT-2 built here, imported
through import-hf: every choice's log-likelihood within 1e-4 of transformers (torch, float32)
on the same prompt, and each bad input one line (exit 2) naming the key or file, nothing written.
"""

import json
import os

import numpy as np
import pytest

from transformer import evaluate
from transformer import import_hf
from transformer.comparisons import fewshot as tasks_lib

from tests.hf import builders

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

WORDS = ['the cat', 'a dog', 'one fish', 'two birds', 'red apples', 'blue skies', 'old trees']


def _write(path, records):
  with open(path, 'w', encoding='utf-8') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')
  return str(path)


def _choice_records(n, offset=0):
  return [{'context': f'Question {i}: which of these is {WORDS[i % 7]}?\nAnswer:',
           'choices': [WORDS[(i + j) % 7] for j in range(3)], 'label': (i + offset) % 3}
          for i in range(offset, offset + n)]


@pytest.fixture(scope='module')
def gpt2(tmp_path_factory):
  """(import dir, HF model, HF tokenizer, task dir) of a random GPT-2 and its BPE tokenizer."""
  root = tmp_path_factory.mktemp('gpt2')
  hf_dir, out = str(root / 'hf'), str(root / 'imported')
  builders.gpt2_tokenizer(hf_dir)
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.2))
  model.eval()
  model.save_pretrained(hf_dir)
  assert import_hf.main(['--from', hf_dir, '--workdir', out]) == 0
  tasks = root / 'task'
  tasks.mkdir()
  _write(tasks / 'train.jsonl', _choice_records(5, offset=20))
  _write(tasks / 'test.jsonl', _choice_records(4))
  _write(tasks / 'cloze.jsonl', [{'context': c, 'completion': t} for c, t in _clozes(model, tok)]
         + [{'context': 'x', 'completion': ' the'}])
  return out, model, tok, tasks


def _greedy(model, tok, context, n):
  """transformers' greedy continuation (n token ids) of <|endoftext|> + context."""
  ids = [tok.eos_token_id] + tok.encode(context)
  with torch.no_grad():
    return model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                          pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()


def _clozes(model, tok, count=2, n=2):
  """(context, transformers' greedy n-token continuation as text, less the one space the task
  puts before it) of the first `count` contexts whose continuation starts with a space and
  tokenizes back to the same ids (a random model often picks byte pieces that do not)."""
  found = []
  for a in WORDS:
    for b in WORDS:
      context = f'{a} and {b}'
      new = _greedy(model, tok, context, n)
      text = tok.decode(new)
      if text.startswith(' ') and tok.encode(context + text) == tok.encode(context) + new:
        found.append((context, text[1:]))
      if len(found) == count:
        return found
  raise AssertionError('no greedy continuation tokenizes back to itself')


def _reference(model, tok, prompt, continuation):
  """Summed log P(continuation | <|endoftext|> + prompt) by transformers, split as the harnesses
  split a pair: the continuation is what the whole string has past the prompt's own tokens."""
  context = tok.encode(prompt)
  whole = tok.encode(prompt + continuation)
  assert whole[:len(context)] == context
  ids = [tok.eos_token_id] + whole
  with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].float()
  logp = torch.log_softmax(logits, -1)
  start = 1 + len(context)
  return sum(float(logp[i - 1, ids[i]]) for i in range(start, len(ids)))


def test_choice_loglikelihoods_match_transformers(gpt2, capsys):
  out, model, tok, tasks = gpt2
  test_file = str(tasks / 'test.jsonl')
  assert evaluate.main(['--workdir', out, '--task', test_file, '--fewshot', '2',
                        '--batch_size', '5']) == 0
  assert 'test 2-shot, 4 examples: accuracy' in capsys.readouterr().out
  with open(os.path.join(out, 'fewshot', 'test_2shot.json')) as f:
    result = json.load(f)
  task = tasks_lib.load(test_file)
  worst = 0.0
  for i, (example, record) in enumerate(zip(task.test, result['records'])):
    prompt = tasks_lib.prompt(task, example, tasks_lib.shots(task, i, 2, 0))
    want = [_reference(model, tok, prompt, c) for c in tasks_lib.continuations(task, example)]
    worst = max(worst, float(np.max(np.abs(np.subtract(record['loglikelihoods'], want)))))
    assert record['prediction'] == int(np.argmax(want))
  print(f'\n[fewshot] largest log-likelihood difference to transformers: {worst:.2e}')
  assert worst < 1e-4
  assert result['examples'] == 4 and set(result['metrics']) == {
      'accuracy', 'accuracy_per_token', 'accuracy_per_char'}


def test_cloze_exact_match_is_the_greedy_continuation(gpt2):
  """Two completions are transformers' own greedy continuations, the third is not."""
  out, model, tok, tasks = gpt2
  assert evaluate.main(['--workdir', out, '--task', str(tasks / 'cloze.jsonl')]) == 0
  with open(os.path.join(out, 'fewshot', 'cloze_0shot.json')) as f:
    result = json.load(f)
  assert [r['exact_match'] for r in result['records']] == [1, 1, 0], result['records']
  assert result['metrics']['exact_match'] == pytest.approx(200 / 3)
  the = tok.encode('x the')[len(tok.encode('x')):]
  assert _greedy(model, tok, 'x', len(the)) != the   # the third is not the greedy one indeed


def _error(capsys, argv, *names):
  capsys.readouterr()
  try:
    code = evaluate.main(argv)
  except SystemExit as e:
    code = e.code
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert code == 2 and len(lines) == 1, err
  for name in names:
    assert name in lines[0], lines[0]
  return lines[0]


def test_bad_inputs_are_one_line_and_write_nothing(gpt2, tmp_path, capsys):
  out, _, _, tasks = gpt2
  before = sorted(os.listdir(out))
  test_file = str(tasks / 'test.jsonl')
  _error(capsys, ['--workdir', out, '--task', test_file, '--fewshot', '6'],
         '--fewshot 6', 'train.jsonl', 'at most 5')
  _error(capsys, ['--workdir', out, '--task', 'no_such_task'], '--task no_such_task',
         'stdlib_docstrings')
  no_choices = _write(tmp_path / 'a.jsonl', [{'context': 'x', 'label': 0}])
  _error(capsys, ['--workdir', out, '--task', no_choices], no_choices, '"choices"')
  no_label = _write(tmp_path / 'b.jsonl', _choice_records(2) + [{'context': 'x', 'choices': ['a',
                                                                                           'b']}])
  _error(capsys, ['--workdir', out, '--task', no_label], no_label, 'line 3', '"label"')
  out_of_range = _write(tmp_path / 'c.jsonl', [{'context': 'x', 'choices': ['a', 'b'], 'label': 2}])
  _error(capsys, ['--workdir', out, '--task', out_of_range], out_of_range, '"label" 2')
  _error(capsys, ['--workdir', str(tmp_path), '--task', test_file], 'no config.json')
  assert sorted(os.listdir(out)) == before


def test_a_prefix_lm_reads_the_prompt_both_ways(gpt2):
  """The same weights scored as a prefix LM (--config.objective=prefix_lm): the prompt attends
  to itself bidirectionally, so the choices' log-likelihoods move off the causal ones."""
  out, model, tok, tasks = gpt2
  task = str(tasks / 'test.jsonl')
  assert evaluate.main(['--workdir', out, '--task', task, '--config.objective=prefix_lm']) == 0
  with open(os.path.join(out, 'fewshot', 'test_0shot.json')) as f:
    prefix = [r['loglikelihoods'] for r in json.load(f)['records']]
  causal = [[_reference(model, tok, e['context'], ' ' + c) for c in e['choices']]
            for e in tasks_lib.load(task).test]
  assert np.abs(np.subtract(prefix, causal)).max() > 1e-2
