"""Where dropout sits, per family: after the MLP activation (model.mlp_dropout: T5, BART, the 2017
Transformer; not BERT or GPT-2) and after the final norm (model.final_dropout: T5; not GPT-2), as
in the published models; the HF import sets both. Neither changes inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer import config as config_lib
from transformer import models
from transformer.hf import hf_config

SMALL = dict(vocab_size=64, num_layers=1, d_model=32, num_heads=4, head_dim=8, d_ff=64, max_len=16,
             dropout_rate=0.5, attention_dropout_rate=0.0,
             scan_layers=False)   # the published sizes scan; these tests read layers[0]


def _model(spec, **overrides):
  model_config = config_lib.load_file(spec).model
  model_config.update({**SMALL, **overrides})
  return models.build(model_config, rngs=nnx.Rngs(params=0, dropout=1))


def _stack(model):
  return model.encoder if model.hp.family != 'decoder' else model.decoder


def _mlp_drops_out(model):
  """Whether the first block's MLP differs between training and inference on the same input."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 32))
  mlp = _stack(model).layers[0].mlp
  return not np.array_equal(mlp(x, deterministic=False), mlp(x, deterministic=True))


def _final_zero_fraction(model):
  """Fraction of exact zeros in the stack's output in training (a dropout after the final norm
  zeroes about dropout_rate of it; a norm's output is never exactly 0 otherwise)."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 32))
  ones = jnp.ones((2, 8), jnp.int32)
  out = _stack(model)(x, segment_ids=ones, positions=jnp.cumsum(ones, 1) - 1, deterministic=False)
  return float(jnp.mean(out == 0))


# (config, dropout after the MLP activation, dropout after the final norm; None: no final norm)
PUBLISHED = [
    ('configs/gpt2.py:small', False, False),        # GPT2MLP: c_fc, act, c_proj, dropout; ln_f
    ('configs/bert.py:base', False, None),          # BertIntermediate has no dropout
    ('configs/t5.py:base', True, True),             # T5DenseActDense; T5Stack final dropout
    ('configs/t5.py:v1_1_small', True, True),
    ('configs/bart.py:base', True, None),           # activation_dropout
    ('configs/transformer.py:base', True, None),    # tensor2tensor's relu_dropout
]


@pytest.mark.parametrize('spec,mlp,final', PUBLISHED, ids=[p[0].split('/')[1] for p in PUBLISHED])
def test_dropout_sits_where_the_published_model_has_it(spec, mlp, final):
  model = _model(spec)
  assert _mlp_drops_out(model) == mlp
  zeros = _final_zero_fraction(model)
  if final:
    assert 0.3 < zeros < 0.7, zeros
  elif final is False:
    assert zeros == 0.0, zeros


def test_placement_knobs_change_training_only():
  """Both knobs on a GPT-2: same parameters, same inference; training drops out in both places."""
  off, on = _model('configs/gpt2.py:small'), _model('configs/gpt2.py:small', mlp_dropout=True,
                                                     final_dropout=True)
  assert jax.tree.structure(nnx.state(off, nnx.Param)) == jax.tree.structure(
      nnx.state(on, nnx.Param))
  tokens = jax.random.randint(jax.random.key(2), (2, 8), 1, 64)
  np.testing.assert_array_equal(on(tokens), off(tokens))
  assert _mlp_drops_out(on) and 0.3 < _final_zero_fraction(on) < 0.7


class _NoWeights:
  tensors = {}

  def has(self, name):
    del name
    return False


HF = {
    'bert': dict(model_type='bert', vocab_size=64, num_hidden_layers=1, hidden_size=32,
                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=16),
    'gpt2': dict(model_type='gpt2', vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_positions=16),
    'bart': dict(model_type='bart', vocab_size=64, encoder_layers=1, decoder_layers=1, d_model=32,
                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                 decoder_ffn_dim=64, max_position_embeddings=16, activation_dropout=0.1),
    't5': dict(model_type='t5', vocab_size=64, num_layers=1, d_model=32, num_heads=4, d_kv=8,
               d_ff=64),
}


@pytest.mark.parametrize('arch,mlp,final', [('bert', False, False), ('gpt2', False, False),
                                            ('bart', True, False), ('t5', True, True)])
def test_hf_import_sets_the_placement(arch, mlp, final):
  fields = hf_config.ARCHITECTURES[arch](hf_config.HFConfig(HF[arch], 'config.json'),
                                         _NoWeights())[1]
  assert (fields['mlp_dropout'], fields['final_dropout']) == (mlp, final)


def test_hf_bart_without_activation_dropout_has_none():
  values = {**HF['bart'], 'activation_dropout': 0.0}
  fields = hf_config.bart(hf_config.HFConfig(values, 'config.json'), _NoWeights())[1]
  assert fields['mlp_dropout'] is False


def test_activation_memory_counts_the_mlp_dropout_mask_only_where_there_is_one():
  from transformer.monitoring import accounting as summary  # pylint: disable=import-outside-toplevel
  config = config_lib.load_file('configs/gpt2.py:small')
  without = summary.activation_bytes(config)['none']['decoder']
  config.model.mlp_dropout = True
  assert summary.activation_bytes(config)['none']['decoder'] == without + config.model.d_ff
