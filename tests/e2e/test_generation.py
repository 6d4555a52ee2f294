"""Generation end to end: seq2seq runs log eval/bleu (and eval/rouge*) that equal sacrebleu /
rouge-score on the decodes they write, the HParams dashboard and the sweep table show them, and
`python -m transformer.generate` decodes from a run directory (and refuses what it cannot).
"""

import json
import os

import numpy as np
import pytest
import sacrebleu

from transformer import config as config_lib
from transformer import generate
from transformer.models import decoding
from transformer.monitoring.events import read_events
from transformer.objectives import metrics
from transformer.sweeps import results
from transformer.training import loop, setup
from transformer.training.trainer import Trainer

SMALL = {'train.steps': '3', 'train.batch_size': '8', 'train.eval_every': '3',
         'train.eval_steps': '1', 'train.log_every': '3', 'checkpoint.every': '3',
         'checkpoint.async_save': 'false', 'data.vocab_size': '1024', 'data.seq_len': '48',
         'log.samples': '2', 'log.attention_images': 'false', 'log.decode.examples': '12',
         'log.decode.max_new_tokens': '8', 'opt.warmup_steps': '1', 'model.num_layers': '1',
         'model.d_model': '32', 'model.num_heads': '2', 'model.d_ff': '64'}
RUNS = {   # an encoder-decoder translating en -> de with beam search, a decoder-only summariser
    'translate': ('configs/transformer.py:tiny', {'data.targets_len': '24'}),
    'summarise': ('configs/gpt2.py:tiny', {'objective': 'seq2seq', 'model.max_len': '48',
                                            'data.source': 'python_stdlib/docstrings'}),
}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{name: (config, run dir)} of the two runs, trained once for this file."""
  workdir = str(tmp_path_factory.mktemp('generation'))
  out = {}
  for name, (spec, overrides) in RUNS.items():
    config = config_lib.load(spec, {**SMALL, **overrides, 'run_name': name})
    loop.train(config, workdir)
    out[name] = (config, setup.run_dir(config, workdir))
  return out


def _decodes(run_dir, step=3):
  with open(os.path.join(run_dir, 'decodes', f'step_{step}.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize('name,tags', [('translate', ['eval/bleu']),
                                       ('summarise', ['eval/bleu', 'eval/rouge1', 'eval/rouge2',
                                                      'eval/rougeL'])])
def test_logged_scores_equal_the_reference_implementations(runs, name, tags):
  _, run_dir = runs[name]
  decodes = _decodes(run_dir)
  assert len(decodes) == 12 and all(set(d) == {'input', 'prediction', 'reference'}
                                    for d in decodes)
  assert any(d['prediction'] for d in decodes)
  events = read_events(run_dir)
  logged = {tag: events['scalars'][tag][-1][1] for tag in tags}
  predictions = [d['prediction'] for d in decodes]
  references = [d['reference'] for d in decodes]
  want = sacrebleu.corpus_bleu(predictions, [references]).score
  assert logged['eval/bleu'] == pytest.approx(want, abs=1e-4)
  if 'eval/rouge1' in tags:
    for tag, value in metrics.rouge(predictions, references).items():
      assert logged[f'eval/{tag}'] == pytest.approx(value, abs=1e-4)
  assert set(tags) <= set(events['hparam_metrics']), events['hparam_metrics']
  samples = events['text']['samples'][-1][1]
  assert decodes[0]['prediction'] in samples and '**reference:**' in samples


def test_sweep_table_has_the_generation_columns(runs):
  row = results.run_results(runs['summarise'][1])
  assert row['final_eval_bleu'] == pytest.approx(row['best_eval_bleu'])
  assert 'final_eval_rougeL' in row
  columns = results.table_columns([row, results.run_results(runs['translate'][1])])
  assert 'final_eval_rouge1' in columns and 'best_eval_bleu' in columns
  assert 'final_eval_bleu' in results.markdown([row], [])


def test_generate_from_a_run_directory(runs, tmp_path, capsys):
  _, run_dir = runs['translate']
  inputs = tmp_path / 'inputs.txt'
  inputs.write_text('Open the file\nSave\n')
  assert generate.main(['--workdir', run_dir, '--input_file', str(inputs), '--strategy', 'beam',
                        '--beam_size', '3', '--num_return', '2', '--max_new_tokens', '6',
                        '--checkpoint', 'best']) == 0
  captured = capsys.readouterr()
  lines = captured.out.strip('\n').split('\n')
  assert len(lines) == 4 and all(len(line.split('\t')) == 2 for line in lines)
  scores = [float(line.split('\t')[0]) for line in lines]
  assert scores[0] >= scores[1] and scores[2] >= scores[3]
  assert 'step 3 (best)' in captured.err
  _, run_dir = runs['summarise']
  args = ['--workdir', run_dir, '--prompt', 'def add(a, b): return a + b', '--strategy',
          'sample', '--temperature', '0.8', '--top_p', '0.9', '--max_new_tokens', '5']
  assert generate.main(args) == 0
  first = capsys.readouterr().out
  assert generate.main(args) == 0 and capsys.readouterr().out == first   # seeded
  assert len(first.strip('\n').split('\n')) == 1


def test_generate_samples_each_input_by_its_line(runs):
  """The issue's case: one prompt listed 4 times with --batch_size 2 gave 2 samples, each twice.
  Each input draws by its line, so 4 different samples, the same for any --batch_size."""
  _, run_dir = runs['summarise']
  run = setup.prepare(generate.load_config(run_dir, {}), os.path.dirname(run_dir))
  model, _ = generate.load_model(run, run_dir, 'latest')
  spec = decoding.Spec('sample', temperature=2.0)
  by_batch_size = [[text for [(_, text)] in generate.generate(
      run, model, ['def add(a, b):'] * 4, spec, max_new_tokens=6, batch_size=batch_size)]
                   for batch_size in (2, 4)]
  assert len(set(by_batch_size[0])) == 4, by_batch_size[0]
  assert by_batch_size[1] == by_batch_size[0]


def test_text_samples_past_the_tokenizer_do_not_end_training(tmp_path, monkeypatch):
  """A model with more rows than its tokenizer has ids (1100 for 1024), biased toward its last
  row: its eval samples never hold that id, and training goes on to its last checkpoint (the
  tokenizer's IndexError on it ended training at the first eval, before that step's checkpoint)."""
  config = config_lib.load('configs/gpt2.py:tiny', {
      **SMALL, 'model.vocab_size': '1100', 'model.lm_head_bias': 'true', 'train.steps': '2',
      'train.eval_every': '1', 'train.log_every': '1', 'checkpoint.every': '1',
      'log.decode.examples': '0', 'run_name': 'past'})
  built = Trainer.model

  def biased(self, params):
    model = built(self, params)
    model.lm_head.bias.value = model.lm_head.bias.value.at[-1].set(1e3)
    return model
  monkeypatch.setattr(Trainer, 'model', biased)
  loop.train(config, str(tmp_path))
  run_dir = setup.run_dir(config, str(tmp_path))
  assert sorted(os.listdir(os.path.join(run_dir, 'checkpoints'))) == ['1', '2']
  samples = read_events(run_dir)['text']['samples']
  assert [step for step, _ in samples] == [1, 2] and '**prediction:**' in samples[-1][1]


def _one_line_error(capsys, argv, *fragments):
  capsys.readouterr()   # what came before
  assert generate.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  assert all(f in err for f in fragments), err


def test_generate_refuses_bad_requests_in_one_line(runs, tmp_path, capsys):
  _, run_dir = runs['translate']
  _one_line_error(capsys, ['--workdir', str(tmp_path), '--prompt', 'x'], 'no config.json')
  _one_line_error(capsys, ['--workdir', run_dir, '--prompt', 'x', '--top_p', '1.5'],
                  '--top_p=1.5')
  _one_line_error(capsys, ['--workdir', run_dir, '--prompt', 'x', '--strategy', 'nucleus'],
                  'greedy, sample, beam')
  with pytest.raises(SystemExit) as e:   # argparse: neither --prompt nor --input_file
    generate.main(['--workdir', run_dir])
  assert e.value.code == 2


def test_generate_refuses_an_import_without_a_tokenizer(tmp_path, capsys):
  pytest.importorskip('transformers')
  from tests.e2e.test_hf_parity import gpt2  # pylint: disable=import-outside-toplevel
  from transformer import import_hf  # pylint: disable=import-outside-toplevel
  gpt2().save_pretrained(tmp_path / 'hf')
  import_hf.convert(tmp_path / 'hf', tmp_path / 'imported', weights_only=True)
  _one_line_error(capsys, ['--workdir', str(tmp_path / 'imported'), '--prompt', 'hello'],
                  'weights_only', 'no tokenizer')


def test_every_process_count_decodes_the_same_examples():
  """The gathered batch of one process is its own batch (the multi-process path: slow tests)."""
  from transformer.training import generation  # pylint: disable=import-outside-toplevel
  batch = {'inputs': np.ones((2, 3), np.int32)}
  assert generation._gathered(None, batch, None) is batch  # pylint: disable=protected-access
