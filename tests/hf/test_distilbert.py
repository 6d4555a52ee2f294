"""DistilBERT in and out: imported logits within 1e-4 of transformers (learned and sinusoidal
positions), HF -> import -> export -> HF bit-identical, our runs exported as
DistilBertForMaskedLM / DistilBertForSequenceClassification load in transformers with our
logits, and a knob DistilBERT lacks refused in one line with nothing written.

Run with -s to see the measured logit error per model.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from transformer import export as export_cli
from transformer import hf
from transformer import import_hf
from transformer.errors import ConfigError

from tests.hf import builders
from tests.hf.test_export import make_run, sp_tokenizer  # noqa: F401  (a fixture)

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

TOLERANCE = 1e-4
# What makes one of our encoders a DistilBERT: no token types, BERT's heads, eps 1e-12, and the
# classifier's pre_classifier + ReLU.
DISTIL = dict(type_vocab_size=0, norm_eps=1e-12, pooler_activation='relu')


def _distilbert(head='DistilBertForMaskedLM', **config):
  """A random tiny DistilBERT (torch, float32, eval) with non-trivial norms and biases."""
  torch.manual_seed(0)
  model = getattr(transformers, head)(transformers.DistilBertConfig(**{**dict(
      vocab_size=400, dim=24, n_layers=2, n_heads=3, hidden_dim=40,
      max_position_embeddings=32, activation='gelu'), **config}))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('bias') or 'layer_norm' in name.lower():
        p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _error(name, ref, got):
  error = float(np.abs(np.asarray(ref) - np.asarray(got)).max())
  print(f'\n[distilbert] {name}: max abs logit error {error:.2e}')
  return error


def _ids(rows=3, length=11, vocab=400):
  return np.random.default_rng(0).integers(4, vocab, (rows, length)).astype(np.int64)


@pytest.mark.parametrize('config', [{}, {'sinusoidal_pos_embds': True},
                                    {'activation': 'relu', 'tie_word_embeddings': False}],
                         ids=['learned', 'sinusoidal', 'relu-untied'])
def test_imported_logits_match_transformers(tmp_path, config):
  reference = _distilbert(**config)
  reference.save_pretrained(tmp_path)
  ours_config, model = hf.from_pretrained(tmp_path)
  m = ours_config.model
  assert (m.family, m.type_vocab_size, m.norm_eps, m.classifier_pooler, m.pooler_activation) == (
      'encoder', 0, 1e-12, True, 'relu')
  assert m.positions == ('sinusoidal' if config.get('sinusoidal_pos_embds') else 'learned')
  ids = _ids()
  with torch.no_grad():
    ref = reference(input_ids=torch.tensor(ids)).logits.numpy()
  assert _error(f'import {config}', ref, model(jnp.asarray(ids, jnp.int32))) < TOLERANCE


@pytest.mark.parametrize('config', [{}, {'sinusoidal_pos_embds': True}],
                         ids=['learned', 'sinusoidal'])
def test_round_trip_is_bit_identical(tmp_path, config):
  hf_dir, ours, out = tmp_path / 'hf', tmp_path / 'ours', tmp_path / 'out'
  model = _distilbert(**config)
  model.save_pretrained(hf_dir)
  builders.bert_tokenizer(str(hf_dir))
  assert import_hf.main(['--from', str(hf_dir), '--workdir', str(ours)]) == 0
  assert export_cli.main(['--workdir', str(ours), '--to', str(out)]) == 0
  before = safetensors.numpy.load_file(hf_dir / 'model.safetensors')
  after = safetensors.numpy.load_file(out / 'model.safetensors')
  assert sorted(after) == sorted(before)
  for name, tensor in before.items():
    assert after[name].dtype == tensor.dtype and np.array_equal(after[name], tensor), name
  reloaded = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
  assert type(reloaded).__name__ == 'DistilBertForMaskedLM'
  assert reloaded.config.sinusoidal_pos_embds == bool(config.get('sinusoidal_pos_embds'))
  ids = torch.tensor(_ids(2, 7))
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(input_ids=ids).logits.numpy(),
                                  model(input_ids=ids).logits.numpy())
  original = transformers.AutoTokenizer.from_pretrained(hf_dir)
  exported = transformers.AutoTokenizer.from_pretrained(out)
  for text in builders.SENTENCES:
    assert exported(text)['input_ids'] == original(text)['input_ids']


CASES = [  # (objective, model overrides, AutoModel class, Hugging Face class)
    (None, {}, 'AutoModelForMaskedLM', 'DistilBertForMaskedLM'),
    (None, {'positions': 'sinusoidal'}, 'AutoModelForMaskedLM', 'DistilBertForMaskedLM'),
    ('classification', {'num_classes': 3}, 'AutoModelForSequenceClassification',
     'DistilBertForSequenceClassification'),
]


@pytest.mark.parametrize('objective,overrides,auto,hf_class', CASES,
                         ids=['mlm', 'mlm-sinusoidal', 'classification'])
def test_export_of_our_run_loads_in_transformers(tmp_path, sp_tokenizer, objective, overrides,
                                                 auto, hf_class):
  run_dir, out = str(tmp_path / 'run'), str(tmp_path / 'out')
  _, model = make_run(run_dir, 'configs/bert.py:tiny', sp_tokenizer, objective,
                      **DISTIL, **overrides)
  assert export_cli.main(['--workdir', run_dir, '--to', out]) == 0
  reference, info = getattr(transformers, auto).from_pretrained(out, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  assert type(reference).__name__ == hf_class
  ids = _ids(vocab=sp_tokenizer.vocab_size)
  with torch.no_grad():
    ref = reference.eval()(input_ids=torch.tensor(ids)).logits.numpy()
  got = model(jnp.asarray(ids, jnp.int32))
  assert _error(f'export {objective or "mlm"} {overrides}', ref, got) < TOLERANCE


def _refused(capsys, argv, *needles):
  assert export_cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  for needle in needles:
    assert needle in err, err


@pytest.mark.parametrize('objective,overrides,knob', [
    (None, {'norm_eps': 1e-5}, '`model.norm_eps=1e-05`'),
    (None, {'positions': 'rotary'}, "`model.positions='rotary'`"),
    ('classification', {'pooler_activation': 'tanh'}, "`model.pooler_activation='tanh'`"),
])
def test_knobs_distilbert_lacks_are_refused_in_one_line(tmp_path, sp_tokenizer, capsys,
                                                        objective, overrides, knob):
  run_dir = str(tmp_path / 'run')
  make_run(run_dir, 'configs/bert.py:tiny', sp_tokenizer, objective, **{**DISTIL, **overrides})
  _refused(capsys, ['--workdir', run_dir, '--to', str(tmp_path / 'out')], knob, 'DISTILBERT')
  assert sorted(os.listdir(tmp_path)) == ['run']   # no output, no temporary directory


def test_a_position_table_that_is_not_sinusoidal_is_refused(tmp_path):
  model = _distilbert(sinusoidal_pos_embds=True)
  with torch.no_grad():
    model.distilbert.embeddings.position_embeddings.weight.add_(0.5)
  model.save_pretrained(tmp_path)
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  message = str(e.value)
  assert '\n' not in message and 'sinusoidal_pos_embds' in message, message
