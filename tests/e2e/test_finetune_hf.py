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
from transformer.hf import __main__ as import_hf
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


def _check_tokenizer(run_dir, hf_dir):
  kept = hf_tokenizer.HFTokenizer(os.path.join(run_dir, 'tokenizer'))
  original = hf_tokenizer.HFTokenizer(hf_dir)
  assert kept.vocabulary() == original.vocabulary()
  assert kept.encode('a wonderful film') == original.encode('a wonderful film')


@pytest.mark.parametrize('family', ['bert', pytest.param('gpt2', marks=pytest.mark.slow)])
def test_classification_fine_tune_beats_chance(tmp_path, capsys, family):
  data = sentiment_file(tmp_path / 'sentiment.jsonl')
  config, hf_dir = fine_tune_config(family, str(tmp_path), 'classification', data, steps=80,
                                    **{'data.text_key': 'text', 'data.label_key': 'label'})
  final = loop.train(config, str(tmp_path / 'runs'))
  printed = capsys.readouterr().out
  with capsys.disabled():
    print(f'\n[fine-tune] {family} classification eval accuracy {final["eval/accuracy"]:.3f}')
  assert final['eval/accuracy'] >= 0.85, final
  fresh = printed.split('fresh: ')[1].splitlines()[0]
  assert set(fresh.rstrip('.').split(', ')) <= {'classifier/classifier/kernel',
                                               'classifier/classifier/bias'}, fresh  # pooler: loaded
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


def test_jsonl_classification_as_a_new_user_types_it(tmp_path, capsys):
  """The issue's command: a classification fine-tune on a {"text", "label"} file."""
  data = sentiment_file(tmp_path / 'mine.jsonl', n=120)
  out, _ = imported(str(tmp_path), 'bert')
  capsys.readouterr()
  code = train_cli.main([
      '--config', 'configs/bert.py:tiny', '--workdir', str(tmp_path / 'runs'),
      '--config.objective=classification', f'--config.data.source=jsonl:{data}',
      '--config.data.text_key=text', '--config.data.label_key=label',
      f'--config.checkpoint.init_from={out}', '--config.data.seq_len=32',
      '--config.train.steps=2', '--config.opt.warmup_steps=1', '--config.train.eval_steps=1',
      '--config.log.samples=0', '--config.log.attention_images=false',
      f'--config.data.data_dir={tmp_path / "data"}'])
  assert code == 0, capsys.readouterr().err
  assert os.path.isdir(tmp_path / 'runs' / 'default' / 'bert_tiny' / 'tokenizer')
