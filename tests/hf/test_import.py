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

from transformer import config as config_lib
from transformer import hf
from transformer.errors import ConfigError
from transformer import import_hf as cli
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


def test_imports_stay_unrolled_unless_asked(tmp_path):
  """The GPT-2 preset scans over its layers; an import keeps the per-layer layout by default."""
  _gpt2(tmp_path)
  config, model = hf.from_pretrained(tmp_path)
  assert config_lib.load_file('configs/gpt2.py:small').model.scan_layers
  assert config.model.scan_layers is False and len(model.decoder.layers) == 2


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

def _with_tokenizer(path, vocab_files=False):
  from tests.hf import builders  # pylint: disable=import-outside-toplevel
  builders.gpt2_tokenizer(str(path), vocab_size=300, vocab_files=vocab_files)
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


def _truncate(name, keep=0.5):
  def truncate(path):
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[:int(len(data) * keep)])
  return truncate


def _as_torch_bin(path):
  tensors = safetensors.numpy.load_file(path / 'model.safetensors')
  torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path / 'pytorch_model.bin')
  os.remove(path / 'model.safetensors')


def _as_shards(weight_map):
  def shard(path):
    os.rename(path / 'model.safetensors', path / 'model-00001-of-00001.safetensors')
    (path / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  return shard


def _malformed(*edits, vocab_files=False):
  """A GPT-2 checkpoint with its tokenizer (`vocab_files`: vocab.json + merges.txt, read with
  tokenizer_config.json's added tokens) and then `edits` applied to its files."""
  def breaker(path):
    _with_tokenizer(path, vocab_files)
    for edit in edits:
      edit(path)
  return breaker


def _set(name, **values):
  def edit(path):
    (path / name).write_text(json.dumps({**json.loads((path / name).read_text()), **values}))
  return edit


def _write(name, text):
  return lambda path: (path / name).write_text(text)


_ADDED = 'tokenizer_config.json', 'added_tokens_decoder'
BAD = [  # (id, breaker, what the line names)
    ('missing_tokenizer', _break_missing_tokenizer, ('no tokenizer files', '--weights_only')),
    ('tokenizer_too_big', _break_tokenizer_too_big,
     ('tokenizer.json', '300 tokens', '280 rows', 'vocab_size')),
    ('model_type', _break_model_type, ('config.json', '"model_type"', 'llama')),
    ('merges', _break_merges, ('merges.txt: missing',)),
    # malformed files: the file (and key) in one line, never a traceback
    ('safetensors_truncated', _malformed(_truncate('model.safetensors')),
     ('model.safetensors: ', 'safetensors')),
    ('safetensors_empty', _malformed(_write('model.safetensors', '')),
     ('model.safetensors: ', 'safetensors')),
    ('bin_truncated', _malformed(_as_torch_bin, _truncate('pytorch_model.bin')),
     ('pytorch_model.bin: ', 'truncated')),
    ('bin_end_truncated', _malformed(_as_torch_bin, _truncate('pytorch_model.bin', 0.99)),
     ('pytorch_model.bin: ', 'truncated')),
    ('shard_index_list', _malformed(_as_shards(['model-00001-of-00001.safetensors'])),
     ('model.safetensors.index.json: ', '"weight_map" is ["model-00001', '(a list)', 'an object')),
    ('shard_index_entry', _malformed(_as_shards({'transformer.wte.weight': 1})),
     ('model.safetensors.index.json: ', '"weight_map.transformer.wte.weight" is 1', 'a string')),
    ('shard_index_empty', _malformed(_as_shards({})),
     ('model.safetensors.index.json: ', '"weight_map" is missing or empty')),
    ('config_not_json', _malformed(_write('config.json', '{"vocab_size": 3')),
     ('config.json: ', 'JSON')),
    ('config_string_size', _malformed(_set('config.json', vocab_size='300')),
     ('config.json: ', '"vocab_size" is "300" (a string); it must be an integer')),
    ('config_float_size', _malformed(_set('config.json', n_embd=12.0)),
     ('config.json: ', '"n_embd"', 'an integer')),
    ('config_bool_size', _malformed(_set('config.json', n_layer=True)),
     ('config.json: ', '"n_layer"', 'an integer')),
    ('config_string_epsilon', _malformed(_set('config.json', layer_norm_epsilon='1e-5')),
     ('config.json: ', '"layer_norm_epsilon"', 'a number')),
    ('config_string_flag', _malformed(_set('config.json', tie_word_embeddings='false')),
     ('config.json: ', '"tie_word_embeddings"', 'true or false')),
    ('config_list_model_type', _malformed(_set('config.json', model_type=['gpt2'])),
     ('config.json: ', '"model_type"', 'a string')),
    ('config_list_activation', _malformed(_set('config.json', activation_function=['gelu'])),
     ('config.json: ', '"activation_function"', 'a string')),
    ('added_tokens_decoder_key', _malformed(
        _set(_ADDED[0], added_tokens_decoder={'abc': {'content': '<x>'}}), vocab_files=True),
     ('tokenizer_config.json: ', '"added_tokens_decoder" has the key "abc", which is not a '
      'token id')),
    ('added_tokens_decoder_entry', _malformed(
        _set(_ADDED[0], added_tokens_decoder={'300': '<x>'}), vocab_files=True),
     ('tokenizer_config.json: ', '"added_tokens_decoder.300"', 'an object')),
    ('added_tokens_decoder_content', _malformed(
        _set(_ADDED[0], added_tokens_decoder={'300': {'special': True}}), vocab_files=True),
     ('tokenizer_config.json: ', '"added_tokens_decoder.300.content"', 'missing')),
    ('added_tokens_decoder_list', _malformed(
        _set(_ADDED[0], added_tokens_decoder=['<x>']), vocab_files=True),
     ('tokenizer_config.json: ', '"added_tokens_decoder"', 'an object')),
    ('added_tokens_json_id', _malformed(
        _write('added_tokens.json', '{"<x>": "300"}'), vocab_files=True),
     ('added_tokens.json: ', '"<x>"', 'an integer')),
    ('add_prefix_space_string', _malformed(
        _set(_ADDED[0], add_prefix_space='yes'), vocab_files=True),
     ('tokenizer_config.json: ', '"add_prefix_space"', 'true or false')),
    ('extra_special_tokens_int', _malformed(_set(_ADDED[0], extra_special_tokens=5)),
     ('tokenizer_config.json: ', '"extra_special_tokens"', 'a list')),
    ('additional_special_tokens_string',
     _malformed(_set(_ADDED[0], additional_special_tokens='<x>')),
     ('tokenizer_config.json: ', '"additional_special_tokens"', 'a list')),
]


@pytest.mark.parametrize('breaker,needles', [pytest.param(b, n, id=i) for i, b, n in BAD])
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
