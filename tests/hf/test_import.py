"""transformer.hf: one-line ConfigErrors, the torch-free .bin reader, shards, and the CLI round trip."""

import json
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from transformer import hf
from transformer.errors import ConfigError
from transformer.hf import __main__ as cli
from transformer.hf import torch_pickle

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def _gpt2(path, **kw):
  """A tiny GPT-2 saved to `path` (safetensors); returns the torch model."""
  shard = kw.pop('shard', False)
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**dict(
      vocab_size=61, n_embd=12, n_layer=2, n_head=3, n_positions=16, bos_token_id=1,
      eos_token_id=1), **kw})).eval()
  model.save_pretrained(path, **({'max_shard_size': '4KB'} if shard else {}))
  return model


def _one_line(excinfo, *needles):
  message = str(excinfo.value)
  assert '\n' not in message
  for needle in needles:
    assert needle in message, message


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _edit_config(path, **changes):
  with open(path / 'config.json') as f:
    config = json.load(f)
  config.update(changes)
  with open(path / 'config.json', 'w') as f:
    json.dump(config, f)


# --- errors ---------------------------------------------------------------------------------------

def test_missing_config(tmp_path):
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, 'config.json', 'missing')


def test_not_a_directory(tmp_path):
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path / 'nope')
  _one_line(e, 'nope', 'not a directory')


def test_unsupported_model_type(tmp_path):
  _gpt2(tmp_path)
  _edit_config(tmp_path, model_type='llama')
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, '"model_type"', 'llama', 'gpt2')


def test_unsupported_variant(tmp_path):
  _gpt2(tmp_path)
  _edit_config(tmp_path, scale_attn_by_inverse_layer_idx=True)
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, 'scale_attn_by_inverse_layer_idx')


def test_missing_weights_file(tmp_path):
  _gpt2(tmp_path)
  os.remove(tmp_path / 'model.safetensors')
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, 'no weights file', 'model.safetensors', 'pytorch_model.bin')


def test_missing_tensor(tmp_path):
  _gpt2(tmp_path)
  tensors = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  del tensors['transformer.h.1.mlp.c_fc.weight']
  safetensors.numpy.save_file(tensors, tmp_path / 'model.safetensors')
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, 'model.safetensors', 'h.1.mlp.c_fc.weight', 'missing')


def test_shape_mismatch(tmp_path):
  _gpt2(tmp_path)
  _edit_config(tmp_path, n_inner=20)  # the weights have 4 * 12 = 48
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, 'h.0.mlp.c_fc.weight', '(12, 48)', '(12, 20)', 'config.json')


def test_missing_config_field(tmp_path):
  _gpt2(tmp_path)
  with open(tmp_path / 'config.json') as f:
    config = json.load(f)
  del config['n_layer']
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(config, f)
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path)
  _one_line(e, 'config.json', '"n_layer"', 'missing')


def test_unknown_override(tmp_path):
  _gpt2(tmp_path)
  with pytest.raises(ConfigError) as e:
    hf.from_pretrained(tmp_path, num_layerz=3)
  _one_line(e, 'num_layerz')


# --- reading --------------------------------------------------------------------------------------

def test_torch_pickle_matches_torch(tmp_path):
  """Non-contiguous views, offsets into shared storages, bf16, ints and scalars come back exact."""
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  state = {'t': base.t(), 'slice': base[1:, 2:5], 'bf16': torch.randn(5).to(torch.bfloat16),
           'long': torch.arange(7), 'scalar': torch.tensor(3.5), 'half': torch.randn(2, 3).half()}
  torch.save(state, tmp_path / 'x.bin')
  loaded = torch_pickle.load(tmp_path / 'x.bin')
  assert set(loaded) == set(state)
  for name, tensor in state.items():
    expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
    assert loaded[name].shape == tuple(tensor.shape), name
    np.testing.assert_array_equal(loaded[name].astype(expected.dtype), expected, err_msg=name)
  assert loaded['bf16'].dtype.name == 'bfloat16'


def test_torch_pickle_refuses_code(tmp_path):
  """A pickle that would call anything but tensor rebuilders is refused, not executed."""
  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))
  filename = tmp_path / 'evil.bin'
  with zipfile.ZipFile(filename, 'w') as z:
    z.writestr('evil/data.pkl', pickle.dumps({'a': Evil()}))
  with pytest.raises(ConfigError) as e:
    torch_pickle.load(filename)
  _one_line(e, 'evil.bin', 'refusing', 'system')


def test_legacy_bert_names(tmp_path):
  """TF-era names (LayerNorm.gamma/beta) and files without the 'bert.' scope load the same."""
  new, old = tmp_path / 'new', tmp_path / 'old'
  torch.manual_seed(0)
  transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=53, hidden_size=12, num_hidden_layers=1, num_attention_heads=3,
      intermediate_size=20, max_position_embeddings=16)).save_pretrained(new)
  tensors = safetensors.numpy.load_file(new / 'model.safetensors')
  renamed = {k.removeprefix('bert.').replace('LayerNorm.weight', 'LayerNorm.gamma').replace(
      'LayerNorm.bias', 'LayerNorm.beta'): v for k, v in tensors.items()}
  assert any('gamma' in k for k in renamed)
  old.mkdir()
  safetensors.numpy.save_file(renamed, old / 'model.safetensors')
  (old / 'config.json').write_text((new / 'config.json').read_text())
  _, a = hf.from_pretrained(new)
  _, b = hf.from_pretrained(old)
  jax.tree.map(np.testing.assert_array_equal, _params(a), _params(b))


def test_sharded_safetensors(tmp_path):
  full, sharded = tmp_path / 'full', tmp_path / 'sharded'
  _gpt2(full)
  _gpt2(sharded, shard=True)
  assert (sharded / 'model.safetensors.index.json').exists()
  _, a = hf.from_pretrained(full)
  _, b = hf.from_pretrained(sharded)
  jax.tree.map(np.testing.assert_array_equal, _params(a), _params(b))


def test_dropout_runs_on_imported_model(tmp_path):
  _gpt2(tmp_path)
  _, model = hf.from_pretrained(tmp_path, dropout_rate=0.5)
  forward = nnx.jit(lambda m, x: m(x, deterministic=False))
  tokens = jnp.ones((2, 8), jnp.int32)
  first, second = forward(model, tokens), forward(model, tokens)
  assert np.all(np.isfinite(first))
  assert not np.allclose(first, second)  # the dropout stream advances between calls


def test_config_from_config_json(tmp_path):
  _gpt2(tmp_path, activation_function='gelu', layer_norm_epsilon=1e-6)
  config, model = hf.from_pretrained(tmp_path, dtype='bfloat16')
  m = config.model
  assert (m.family, m.vocab_size, m.num_layers, m.d_model, m.num_heads, m.d_ff, m.max_len) == (
      'decoder', 61, 2, 12, 3, 48, 16)
  assert (m.activation, m.norm_eps, m.dtype, m.param_dtype) == ('gelu', 1e-6, 'bfloat16',
                                                              'bfloat16')
  assert model.token_embed.embedding.value.dtype == jnp.bfloat16


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_round_trip(tmp_path):
  from transformer.training import checkpoint  # pylint: disable=import-outside-toplevel
  hf_dir, out = tmp_path / 'hf', tmp_path / 'ours'
  torch_model = _gpt2(hf_dir)
  assert cli.main(['--from', str(hf_dir), '--workdir', str(out), '--scan_layers',
                   '--weights_only']) == 0
  saved = json.loads((out / 'config.json').read_text())
  assert saved['model']['scan_layers'] is True and saved['model']['vocab_size'] == 61

  config, model = hf.from_pretrained(hf_dir, scan_layers=True)
  fresh = _params(model)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
  params, missing, unexpected = checkpoint.load_pretrained(out, abstract)
  assert missing == [] and unexpected == []
  jax.tree.map(np.testing.assert_array_equal, params, fresh)

  sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  np.testing.assert_array_equal(params['token_embed']['embedding'], sd['transformer.wte.weight'])
  qkv = np.stack([sd[f'transformer.h.{i}.attn.c_attn.weight'] for i in range(2)])
  np.testing.assert_array_equal(params['decoder']['layers']['self_attention']['key']['kernel'],
                                qkv[:, :, 12:24].reshape(2, 12, 3, 4))
  np.testing.assert_array_equal(params['decoder']['layers']['mlp']['wo']['kernel'],
                                np.stack([sd[f'transformer.h.{i}.mlp.c_proj.weight']
                                          for i in range(2)]))
  assert config.model.scan_layers


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
  assert cli.main(['--from', str(tmp_path / 'missing'), '--workdir', str(tmp_path / 'o')]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err and 'missing' in err


# --- bad inputs of import-hf: one line, exit 2, nothing written ---------------------------------

def _with_tokenizer(path):
  from tests.hf import builders  # pylint: disable=import-outside-toplevel
  builders.gpt2_tokenizer(str(path), vocab_size=300)
  _gpt2(path, vocab_size=300)
  return path


def _break_missing_tokenizer(path):
  _gpt2(path)


def _break_tokenizer_too_big(path):
  _with_tokenizer(path)
  _edit_config(path, vocab_size=280)   # weights and config agree on 280 rows, the tokenizer has 300
  tensors = safetensors.numpy.load_file(path / 'model.safetensors')
  tensors['transformer.wte.weight'] = tensors['transformer.wte.weight'][:280]
  safetensors.numpy.save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})


def _break_model_type(path):
  _with_tokenizer(path)
  _edit_config(path, model_type='llama')


def _break_merges(path):
  _with_tokenizer(path)
  tokenizer = json.loads((path / 'tokenizer.json').read_text())
  (path / 'vocab.json').write_text(json.dumps(tokenizer['model']['vocab']))
  os.remove(path / 'tokenizer.json')


@pytest.mark.parametrize('breaker,needles', [
    (_break_missing_tokenizer, ('no tokenizer files', '--weights_only')),
    (_break_tokenizer_too_big, ('tokenizer.json', '300 tokens', '280 rows', 'vocab_size')),
    (_break_model_type, ('config.json', '"model_type"', 'llama')),
    (_break_merges, ('merges.txt: missing',)),
])
def test_bad_checkpoints_are_refused_and_nothing_is_written(tmp_path, capsys, breaker, needles):
  breaker(tmp_path / 'hf')
  capsys.readouterr()
  assert cli.main(['--from', str(tmp_path / 'hf'), '--workdir', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  for needle in needles:
    assert needle in err, err
  assert not os.path.exists(tmp_path / 'out')


def test_import_into_a_non_empty_directory_is_refused(tmp_path, capsys):
  _with_tokenizer(tmp_path / 'hf')
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'mine.txt').write_text('keep')
  capsys.readouterr()
  assert cli.main(['--from', str(tmp_path / 'hf'), '--workdir', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err.strip()
  assert 'not empty' in err and '\n' not in err, err
  assert os.listdir(tmp_path / 'out') == ['mine.txt']


def test_from_pretrained_with_tokenizer(tmp_path):
  _with_tokenizer(tmp_path)
  config, _, tok = hf.from_pretrained(tmp_path, with_tokenizer=True)
  assert tok.vocab_size == config.model.vocab_size == 300
  assert tok.eos_id == tok.bos_id == tok.encode('<|endoftext|>')[0]
