"""Fine-tuning imported Hugging Face checkpoints end to end (small random models built offline,
each with its own tokenizer): a classifier on a tiny labelled jsonl file reaches accuracy well
above chance (BERT, GPT-2), seq2seq lowers the eval loss of the imported model (T5, BART), and
the run trains with (and keeps) the imported tokenizer.
"""

import json
import os
import random

import jax
import pytest

from transformer import config as config_lib
from transformer import train as train_cli
from transformer.data import hf_tokenizer
from transformer import import_hf
from transformer.training import evaluation, loop, setup

from tests.hf import builders

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

POSITIVE = ['good', 'great', 'wonderful', 'moving', 'fine', 'lovely']
NEGATIVE = ['bad', 'dull', 'boring', 'tedious', 'awful', 'mess']
FILLER = ['the', 'film', 'was', 'a', 'story', 'and', 'very', 'it', 'of', 'this']


def sentiment_file(path, n=480):
  """{"text", "label"} lines: label 1 when the sentence holds a positive word, 0 a negative."""
  rng = random.Random(0)
  with open(path, 'w') as f:
    for i in range(n):
      label = i % 2
      words = rng.sample(FILLER, 5) + [rng.choice(POSITIVE if label else NEGATIVE)]
      rng.shuffle(words)
      f.write(json.dumps({'text': ' '.join(words), 'label': label}) + '\n')
  return path


def pairs_file(path, n=480):
  """{"inputs", "targets"} lines: the targets are the input words in reverse order."""
  rng = random.Random(1)
  with open(path, 'w') as f:
    for _ in range(n):
      words = rng.sample(FILLER + POSITIVE, 5)
      f.write(json.dumps({'inputs': ' '.join(words), 'targets': ' '.join(words[::-1])}) + '\n')
  return path


HF_MODELS = {
    'bert': lambda v: transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)),
    'gpt2': lambda v: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=v, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
        eos_token_id=0)),
    'bart': lambda v: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=64)),
    't5': lambda v: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=v, d_model=32, d_kv=16, num_heads=2, d_ff=64, num_layers=2,
        decoder_start_token_id=0)),
}
SPECS = {'bert': 'configs/bert.py:tiny', 'gpt2': 'configs/gpt2.py:tiny',
         'bart': 'configs/bart.py:tiny', 't5': 'configs/t5.py:tiny'}


def imported(root, family):
  """A random HF `family` model with its tokenizer, saved and imported: the import dir."""
  hf_dir, out = os.path.join(root, 'hf'), os.path.join(root, 'imported')
  builders.TOKENIZERS[family](hf_dir)
  torch.manual_seed(0)
  vocab = len(transformers.AutoTokenizer.from_pretrained(hf_dir))
  HF_MODELS[family](vocab).save_pretrained(hf_dir)
  assert import_hf.main(['--from', hf_dir, '--workdir', out]) == 0
  return out, hf_dir


def fine_tune_config(family, root, objective, source, steps, **extra):
  out, hf_dir = imported(root, family)
  values = {
      'objective': objective, 'data.source': f'jsonl:{source}', 'checkpoint.init_from': out,
      'data.data_dir': os.path.join(root, 'data'), 'data.seq_len': 32, 'data.targets_len': 16,
      'train.steps': steps, 'train.batch_size': 16, 'train.eval_every': steps,
      'train.eval_steps': 4, 'train.log_every': 10, 'checkpoint.every': steps,
      'checkpoint.async_save': False, 'opt.learning_rate': 2e-3, 'opt.warmup_steps': 5,
      'log.samples': 0, 'log.attention_images': False, 'run_name': family}
  values.update(extra)
  config = config_lib.load(SPECS[family], {k: str(v) for k, v in values.items()})
  return config, hf_dir


@pytest.fixture
def fresh(monkeypatch):
  """The parameters init_from left fresh (not in the checkpoint), recorded as the run loads."""
  from transformer.training import checkpoint  # pylint: disable=import-outside-toplevel
  seen, original = [], checkpoint.load_pretrained

  def recording(*args, **kwargs):
    params, missing, unexpected = original(*args, **kwargs)
    seen.extend(missing)
    return params, missing, unexpected
  monkeypatch.setattr(checkpoint, 'load_pretrained', recording)
  return seen


def _check_tokenizer(run_dir, hf_dir):
  kept = hf_tokenizer.HFTokenizer(os.path.join(run_dir, 'tokenizer'))
  original = hf_tokenizer.HFTokenizer(hf_dir)
  assert kept.vocabulary() == original.vocabulary()
  assert kept.encode('a wonderful film') == original.encode('a wonderful film')


@pytest.mark.parametrize('family', ['bert', pytest.param('gpt2', marks=pytest.mark.slow)])
def test_classification_fine_tune_beats_chance(tmp_path, capsys, fresh, family):
  data = sentiment_file(tmp_path / 'sentiment.jsonl')
  config, hf_dir = fine_tune_config(family, str(tmp_path), 'classification', data, steps=80,
                                    **{'data.text_key': 'text', 'data.label_key': 'label'})
  final = loop.train(config, str(tmp_path / 'runs'))
  with capsys.disabled():
    print(f'\n[fine-tune] {family} classification eval accuracy {final["eval/accuracy"]:.3f}')
  assert final['eval/accuracy'] >= 0.85, final
  assert set(fresh) == {'classifier/classifier/kernel', 'classifier/classifier/bias'} - (
      {'classifier/classifier/bias'} if family == 'gpt2' else set()), fresh  # BERT's pooler loaded
  _check_tokenizer(setup.run_dir(config, str(tmp_path / 'runs')), hf_dir)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['t5', 'bart'])
def test_seq2seq_fine_tune_lowers_eval_loss(tmp_path, family):
  data = pairs_file(tmp_path / 'pairs.jsonl')
  lr = {'t5': 1e-2, 'bart': 2e-3}[family]   # T5's Adafactor at its own rate
  config, hf_dir = fine_tune_config(family, str(tmp_path), 'seq2seq', data, steps=60,
                                    **{'opt.learning_rate': lr})
  run = setup.prepare(config, str(tmp_path / 'runs'))
  state = loop.restore_or_init(run, None)[0]   # the imported weights, before any step
  before, _ = evaluation.evaluate(run, state['params'], run.pipeline('eval'),
                                  jax.jit(run.trainer.eval_step))
  final = loop.train(config, str(tmp_path / 'runs'))
  print(f'\n[fine-tune] {family} seq2seq eval loss {before["loss"]:.3f} -> '
        f'{final["eval/loss"]:.3f}')
  assert final['eval/loss'] < 0.7 * before['loss'], (before, final)
  _check_tokenizer(run.dir, hf_dir)
  from transformer import export as export_cli  # pylint: disable=import-outside-toplevel
  assert export_cli.main(['--workdir', run.dir, '--to', str(tmp_path / 'exported')]) == 0
  tuned, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
      tmp_path / 'exported', output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  if family == 'bart':   # the position rows before position 0 come back from the import
    original = transformers.AutoModelForSeq2SeqLM.from_pretrained(hf_dir)
    for stack in ('encoder', 'decoder'):
      torch.testing.assert_close(getattr(tuned.model, stack).embed_positions.weight[:2],
                                 getattr(original.model, stack).embed_positions.weight[:2],
                                 rtol=0, atol=0)


README_FLAGS = ['--config', 'configs/bert.py:base', '--config.objective=classification',
                '--config.data.source=glue/sst2', '--config.checkpoint.init_from={out}',
                '--config.opt.learning_rate=2e-5', '--config.opt.warmup_steps=200',
                '--config.train.steps=6000', '--config.data.seq_len=128',
                '--config.run_name=bert_sst2']


def test_readme_shows_the_tested_command():
  readme = open(os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')).read()
  section = readme.split('## Fine-tune a Hugging Face checkpoint')[1].split('```bash')[1]
  command = section.split('```')[0].replace('\\\n', ' ')
  train = next(l for l in command.splitlines() if l.startswith('./launch.sh train')).split()[2:]
  assert train == [f.replace('{out}', 'pretrained/bert') for f in README_FLAGS]


def test_readme_bert_fine_tune_and_export(tmp_path, capsys, fresh):
  """README "Fine-tune a Hugging Face checkpoint": import, the training command as written (a
  short run on mock glue/sst2 here), export-hf, and transformers loads the classifier."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from transformer import export as export_cli  # pylint: disable=import-outside-toplevel
  hf_dir, out = tmp_path / 'hf', tmp_path / 'pretrained'
  builders.bert_tokenizer(str(hf_dir))
  torch.manual_seed(0)
  transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=64)).save_pretrained(hf_dir)   # 512 positions, as bert-base
  assert import_hf.main(['--from', str(hf_dir), '--workdir', str(out)]) == 0
  short = ['--config.train.steps=3', '--config.opt.warmup_steps=1', '--config.train.eval_steps=1',
           '--config.train.batch_size=4', '--config.log.samples=0',
           '--config.log.attention_images=false', f'--config.data.data_dir={tmp_path / "tfds"}',
           '--workdir', str(tmp_path / 'runs')]
  argv = [f.format(out=out) for f in README_FLAGS] + short   # later flags win
  capsys.readouterr()
  with tfds.testing.mock_data(num_examples=16):
    assert train_cli.main(argv) == 0, capsys.readouterr().err
  assert sorted(fresh) == ['classifier/classifier/bias', 'classifier/classifier/kernel'], fresh
  run_dir = tmp_path / 'runs' / 'default' / 'bert_sst2'
  _check_tokenizer(str(run_dir), str(hf_dir))
  exported = tmp_path / 'exported'
  assert export_cli.main(['--workdir', str(run_dir), '--to', str(exported)]) == 0
  model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      exported, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  reference = transformers.AutoTokenizer.from_pretrained(hf_dir)
  assert transformers.AutoTokenizer.from_pretrained(exported)('a film')['input_ids'] == (
      reference('a film')['input_ids'])


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_generate_reads_an_imported_tokenizer_from_a_fine_tuned_run_and_the_import(tmp_path,
                                                                                   capsys):
  """`generate` decodes with the checkpoint's own Hugging Face tokenizer (tokenizer/), both from
  a run fine-tuned from an import and from the import itself."""
  from transformer import generate  # pylint: disable=import-outside-toplevel
  data = sentiment_file(tmp_path / 'text.jsonl')
  config, hf_dir = fine_tune_config('gpt2', str(tmp_path), 'causal_lm', data, steps=4,
                                    **{'data.text_key': 'text', 'train.eval_steps': 1})
  loop.train(config, str(tmp_path / 'runs'))
  run_dir = setup.run_dir(config, str(tmp_path / 'runs'))
  assert os.path.isdir(os.path.join(run_dir, 'tokenizer'))
  reference = hf_tokenizer.HFTokenizer(hf_dir)
  for workdir in (run_dir, str(tmp_path / 'imported')):
    capsys.readouterr()
    assert generate.main(['--workdir', workdir, '--prompt', 'a wonderful film',
                          '--max_new_tokens', '6']) == 0
    [line] = capsys.readouterr().out.strip('\n').split('\n')
    assert line == reference.decode(reference.encode(line))   # text of that vocabulary
