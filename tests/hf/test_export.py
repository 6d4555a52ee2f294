"""export-hf: our runs as Hugging Face directories that transformers loads with no missing or
unexpected keys and the same logits (< 1e-4); HF -> import -> export -> HF bit-identical in every
tensor; architectures HF lacks and bad targets refused in one line with nothing written.

Run with -s to see the measured logit error per model.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from configs import common
from transformer import config as config_lib
from transformer import export as export_cli
from transformer import models
from transformer.data import tokenizer as tokenizer_lib
from transformer import import_hf
from transformer.hf import export
from transformer.training import checkpoint

from tests.hf import builders

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

TOLERANCE = 1e-4
TEXTS = ['Hello world, this is a test.', 'def area(r):\n    return 3.14 * r * r',
         'Café naïve résumé', '']


@pytest.fixture(scope='module')
def sp_tokenizer(tmp_path_factory):
  """Our SentencePiece tokenizer (unigram, 400 pieces) trained on a text file."""
  root = tmp_path_factory.mktemp('sp')
  (root / 'train.txt').write_text('\n'.join(builders.corpus()))
  c = common.base_config()
  c.data.update(source=f'text:{root}/train.txt', data_dir=str(root), vocab_size=400,
                tokenizer_train_examples=3000)
  return tokenizer_lib.get_tokenizer(c)


def make_run(run_dir, spec, tokenizer, objective=None, **model):
  """A run directory of `spec` (configs/X.py:size) with random parameters (biases and norms
  too), the run's config.json, tokenizer and a checkpoint at step 1: (config, our model)."""
  config = config_lib.load_file(spec)
  config.model.update({**dict(vocab_size=tokenizer.vocab_size, num_layers=2, d_model=32,
                              num_heads=4, d_ff=48, head_dim=0), **model})
  if objective:
    config.objective = objective
  hp = models.HParams.from_config(config.model)
  head = 'classification' if config.objective == 'classification' else 'lm'
  model = models.build(hp, head=head, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(state))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  params = jax.tree.unflatten(treedef, noisy)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  tokenizer.save_to(run_dir)
  ckpt = checkpoint.Checkpointer(os.path.join(run_dir, 'checkpoints'), every=1, keep=1,
                                 keep_best=False, async_save=False)
  ckpt.save(1, {'params': params}, data_position={}, force=True)
  ckpt.wait_until_finished()
  ckpt.close()
  return config, model


def _error(name, ref, got):
  error = float(np.abs(ref - got).max())
  print(f'\n[export] {name}: max abs logit error {error:.2e}')
  return error


def _hf_load(out, auto):
  model, info = getattr(transformers, auto).from_pretrained(out, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  assert not info.get('mismatched_keys'), info
  return model.eval()


def _ids(tokenizer, rows=3, length=9):
  ids = np.random.default_rng(0).integers(4, tokenizer.vocab_size, (rows, length))
  return ids.astype(np.int64)


CASES = [  # (spec, objective, model overrides, AutoModel class, kind)
    ('configs/bert.py:tiny', None, {}, 'AutoModelForMaskedLM', 'encoder'),
    ('configs/bert.py:tiny', 'classification', {'num_classes': 3},
     'AutoModelForSequenceClassification', 'encoder'),
    ('configs/gpt2.py:tiny', None, {}, 'AutoModelForCausalLM', 'decoder'),
    ('configs/gpt2.py:tiny', 'classification', {'num_classes': 3},
     'AutoModelForSequenceClassification', 'decoder_cls'),
    ('configs/bart.py:tiny', None, {}, 'AutoModelForSeq2SeqLM', 'seq2seq'),
    ('configs/t5.py:tiny', None, {'head_dim': 8}, 'AutoModelForSeq2SeqLM', 'seq2seq'),
    ('configs/t5.py:v1_1_tiny', None, {'head_dim': 8}, 'AutoModelForSeq2SeqLM', 'seq2seq'),
]


@pytest.mark.parametrize('spec,objective,overrides,auto,kind', CASES,
                         ids=[f'{c[0][8:].replace(".py", "")}-{c[1] or "lm"}' for c in CASES])
def test_export_of_our_run_loads_in_transformers(tmp_path, sp_tokenizer, spec, objective,
                                                 overrides, auto, kind):
  run_dir, out = str(tmp_path / 'run'), str(tmp_path / 'out')
  _, model = make_run(run_dir, spec, sp_tokenizer, objective, **overrides)
  assert export_cli.main(['--workdir', run_dir, '--to', out]) == 0
  assert {'config.json', 'model.safetensors', 'tokenizer.json'} <= set(os.listdir(out))
  reference = _hf_load(out, auto)
  ids = _ids(sp_tokenizer)
  with torch.no_grad():
    if kind == 'seq2seq':
      dec = ids[:, :5]
      ref = reference(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(dec)).logits
      got = model(jnp.asarray(ids, jnp.int32), jnp.asarray(dec, jnp.int32))
    elif kind == 'decoder_cls':   # no pad token: transformers pools the last token, row by row
      ref = torch.cat([reference(input_ids=torch.tensor(row[None])).logits for row in ids])
      got = model(jnp.asarray(ids, jnp.int32))
    else:
      ref = reference(input_ids=torch.tensor(ids)).logits
      got = model(jnp.asarray(ids, jnp.int32))
  assert _error(f'{spec} {objective or "lm"}', ref.numpy(), np.asarray(got)) < TOLERANCE
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  assert len(hf_tok) == sp_tokenizer.vocab_size
  for text in TEXTS:
    assert hf_tok(text, add_special_tokens=False)['input_ids'] == sp_tokenizer.encode(text)


ROUND_TRIP = {
    'bert': lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=400, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=40, max_position_embeddings=32)),
    'gpt2': lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=400, n_embd=24, n_layer=2, n_head=3, n_positions=32, bos_token_id=0,
        eos_token_id=0)),
    'bart': lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=400, d_model=24, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=3, decoder_attention_heads=3, encoder_ffn_dim=40,
        decoder_ffn_dim=40, max_position_embeddings=32)),
    't5': lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=320, d_model=24, d_kv=8, num_heads=3, d_ff=40, num_layers=2,
        num_decoder_layers=1, decoder_start_token_id=0)),
    't5_v1_1': lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=320, d_model=24, d_kv=8, num_heads=3, d_ff=40, num_layers=2,
        feed_forward_proj='gated-gelu', tie_word_embeddings=False, decoder_start_token_id=0)),
}


def _untie(model):
  """A distinct lm_head, as T5 v1.1 checkpoints have (recent transformers ties it at build)."""
  model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.1)
  return model


@pytest.mark.parametrize('family,scan_layers', [(f, False) for f in ROUND_TRIP] + [
    ('t5_v1_1', True)] + [pytest.param(f, True, marks=pytest.mark.slow) for f in ROUND_TRIP
                          if f != 't5_v1_1'])
def test_round_trip_is_bit_identical(tmp_path, family, scan_layers):
  hf_dir, ours, out = tmp_path / 'hf', tmp_path / 'ours', tmp_path / 'out'
  torch.manual_seed(0)
  model = ROUND_TRIP[family]()
  model = _untie(model) if family == 't5_v1_1' else model
  model.eval().save_pretrained(hf_dir)
  builders.TOKENIZERS[family.split('_')[0]](str(hf_dir))
  args = ['--from', str(hf_dir), '--workdir', str(ours)] + (['--scan_layers'] * scan_layers)
  assert import_hf.main(args) == 0
  assert export_cli.main(['--workdir', str(ours), '--to', str(out)]) == 0
  before = safetensors.numpy.load_file(hf_dir / 'model.safetensors')
  after = safetensors.numpy.load_file(out / 'model.safetensors')
  assert sorted(after) == sorted(before)
  for name, tensor in before.items():
    assert after[name].dtype == tensor.dtype and np.array_equal(after[name], tensor), name
  auto = 'AutoModelForMaskedLM' if family == 'bert' else (
      'AutoModelForCausalLM' if family == 'gpt2' else 'AutoModelForSeq2SeqLM')
  reloaded = _hf_load(out, auto)
  ids = torch.tensor(np.random.default_rng(1).integers(4, 300, (2, 7)))
  kwargs = {'decoder_input_ids': ids[:, :4]} if family not in ('bert', 'gpt2') else {}
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(input_ids=ids, **kwargs).logits.numpy(),
                                  model(input_ids=ids, **kwargs).logits.numpy())
  original = transformers.AutoTokenizer.from_pretrained(hf_dir)
  exported = transformers.AutoTokenizer.from_pretrained(out)
  for text in builders.SENTENCES:
    assert exported(text)['input_ids'] == original(text)['input_ids']


def _refused(capsys, argv, *needles):
  assert export_cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  for needle in needles:
    assert needle in err, err
  return err


@pytest.mark.parametrize('spec,overrides,knob', [
    ('configs/bert.py:tiny', {'positions': 'rotary'}, "`model.positions='rotary'`"),
    ('configs/transformer.py:tiny', {}, "`model.positions='sinusoidal'`"),
    ('configs/gpt2.py:tiny', {'num_kv_heads': 2}, '`model.num_kv_heads=2`'),
    ('configs/gpt2.py:tiny', {'norm': 'rmsnorm'}, "`model.norm='rmsnorm'`"),
    ('configs/t5.py:tiny', {'activation': 'gelu_tanh', 'head_dim': 8, 'use_bias': True},
     '`model.use_bias=True`'),
])
def test_architectures_hf_lacks_are_refused_naming_the_knob(tmp_path, sp_tokenizer, capsys,
                                                            spec, overrides, knob):
  run_dir = str(tmp_path / 'run')
  make_run(run_dir, spec, sp_tokenizer, **overrides)
  _refused(capsys, ['--workdir', run_dir, '--to', str(tmp_path / 'out')], knob, 'export')
  assert sorted(os.listdir(tmp_path)) == ['run']   # no output, no temporary directory


def test_bad_targets_and_runs_are_one_line_and_write_nothing(tmp_path, sp_tokenizer, capsys):
  run_dir = str(tmp_path / 'run')
  make_run(run_dir, 'configs/gpt2.py:tiny', sp_tokenizer)
  full = tmp_path / 'full'
  full.mkdir()
  (full / 'keep.txt').write_text('mine')
  _refused(capsys, ['--workdir', run_dir, '--to', str(full)], '--to', 'not empty')
  assert os.listdir(full) == ['keep.txt']
  _refused(capsys, ['--workdir', str(tmp_path / 'nope'), '--to', str(tmp_path / 'o')],
           'no config.json')
  os.remove(os.path.join(run_dir, 'tokenizer.model'))
  _refused(capsys, ['--workdir', run_dir, '--to', str(tmp_path / 'o')], 'no tokenizer')
  assert sorted(os.listdir(tmp_path)) == ['full', 'run']
  empty = tmp_path / 'empty'   # an existing empty directory is a fine target
  empty.mkdir()
  sp_tokenizer.save_to(run_dir)
  assert export_cli.main(['--workdir', run_dir, '--to', str(empty)]) == 0
  assert json.loads((empty / 'config.json').read_text())['architectures'] == ['GPT2LMHeadModel']
