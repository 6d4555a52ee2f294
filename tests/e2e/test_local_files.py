"""Local files for every objective, from scratch as a new user types it: a jsonl file with the
fields the objective needs (text; text + label; inputs + targets) or a text: file trains, and the
tokenizer is trained only on the fields the file has."""

import json
import os
import random

import pytest

from transformer import train

WORDS = ('the a film story was very good bad dull moving long short it and of to in on with for '
         'code data model text word line file run train test').split()


def _write(path, n, fields):
  rng = random.Random(0)
  with open(path, 'w') as f:
    for i in range(n):
      words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
      record = {'text': ' '.join(words), 'label': i % 2, 'inputs': ' '.join(words),
                'targets': ' '.join(words[::-1])}
      if fields == 'plain':
        f.write(' '.join(words) + '\n')
      else:
        f.write(json.dumps({k: record[k] for k in fields}) + '\n')
  return path


CASES = [  # (config, objective, fields of the file, extra flags)
    ('configs/gpt2.py:tiny', 'causal_lm', ('text',), []),
    ('configs/bert.py:tiny', 'classification', ('text', 'label'),
     ['--config.data.text_key=text', '--config.data.label_key=label']),
    ('configs/t5.py:tiny', 'seq2seq', ('inputs', 'targets'), []),
    pytest.param('configs/bert.py:tiny', 'mlm', ('text',), [], marks=pytest.mark.slow),
    pytest.param('configs/gpt2.py:tiny', 'prefix_lm', ('text',), [], marks=pytest.mark.slow),
    pytest.param('configs/t5.py:tiny', 'span_corruption', ('text',), [], marks=pytest.mark.slow),
    pytest.param('configs/gpt2.py:tiny', 'seq2seq', ('inputs', 'targets'), [],
                 marks=pytest.mark.slow),
    pytest.param('configs/gpt2.py:tiny', 'classification', ('text', 'label'), [],
                 marks=pytest.mark.slow),
    pytest.param('configs/gpt2.py:tiny', 'causal_lm', 'plain', [], marks=pytest.mark.slow),
]


@pytest.mark.parametrize('spec,objective,fields,extra', CASES)
def test_local_file_trains_every_objective(tmp_path, capsys, spec, objective, fields, extra):
  kind = 'text' if fields == 'plain' else 'jsonl'
  path = _write(tmp_path / f'mine.{"txt" if kind == "text" else "jsonl"}', 300, fields)
  argv = ['--config', spec, '--workdir', str(tmp_path / 'runs'), f'--config.objective={objective}',
          f'--config.data.source={kind}:{path}', f'--config.data.data_dir={tmp_path / "data"}',
          '--config.data.vocab_size=200', '--config.data.seq_len=32',
          '--config.data.targets_len=32', '--config.model.num_layers=1',
          '--config.model.d_model=32', '--config.model.num_heads=2', '--config.model.d_ff=64',
          '--config.model.head_dim=0', '--config.train.steps=2', '--config.train.batch_size=4',
          '--config.train.eval_steps=1', '--config.opt.warmup_steps=1',
          '--config.log.samples=0', '--config.log.attention_images=false'] + extra
  assert train.main(argv) == 0, capsys.readouterr().err
  run = os.path.join(tmp_path, 'runs', 'default', spec.split(':')[0][8:-3] + '_tiny')
  assert os.path.isfile(os.path.join(run, 'tokenizer.model'))
  assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == ['2']


def _argv(tmp_path, path, *extra):
  return ['--config', 'configs/bert.py:tiny', '--workdir', str(tmp_path / 'runs'),
          '--config.objective=classification', f'--config.data.source=jsonl:{path}',
          f'--config.data.data_dir={tmp_path / "data"}', '--config.data.vocab_size=200',
          '--config.train.steps=2', '--config.train.batch_size=4', '--config.opt.warmup_steps=1',
          *extra]


@pytest.mark.parametrize('given_tokenizer', [False, True])
def test_string_label_is_one_line_before_the_tokenizer(tmp_path, capsys, given_tokenizer):
  """A label that is no class id ("positive", 0.5) stops the run in one line naming the file,
  line, key and value, before a tokenizer is trained and before the run directory exists."""
  good = _write(tmp_path / 'good.jsonl', 300, ('text', 'label'))
  extra = []
  if given_tokenizer:   # a tokenizer that exists already: the run directory must stay unwritten
    from transformer import data   # pylint: disable=g-import-not-at-top
    from tests.data.conftest import make_config   # pylint: disable=g-import-not-at-top
    tok = data.get_tokenizer(make_config(tmp_path / 'tok', source=f'jsonl:{good}', vocab_size=200))
    extra = [f'--config.data.tokenizer={tok.model_path}']
  lines = good.read_text().splitlines()
  lines[6] = json.dumps({**json.loads(lines[6]), 'label': 'positive'})
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('\n'.join(lines) + '\n')
  assert train.main(_argv(tmp_path, bad, *extra)) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and '`data.label_key=label`' in err, err
  assert f'{bad}:7' in err and '"positive"' in err, err
  assert not (tmp_path / 'data').exists() and not (tmp_path / 'runs').exists()
