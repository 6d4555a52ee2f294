"""Model tests: published parameter counts, config errors, scan/remat equivalence, dtypes and a
30-step training smoke test for every family."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from transformer import config as config_lib
from transformer import models
from transformer.errors import ConfigError


def _tiny(**overrides):
  base = dict(vocab_size=31, num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=32,
              dropout_rate=0.0, attention_dropout_rate=0.0)
  return common.model_config(**{**base, **overrides})


def _count(config_spec, head='lm'):
  """Parameters of a preset, from shapes only (nnx.eval_shape allocates nothing)."""
  config = config_lib.load_file(config_spec)
  abstract = nnx.eval_shape(lambda: models.build(config.model, head=head, rngs=nnx.Rngs(0)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


# ------------------------------------------------------------------- published parameter counts

# Exact counts of our models next to the published ones. Every difference is explained; where
# HuggingFace has the same architecture the count is identical to its model class.
PRESET_COUNTS = [
    # BERT-base, MLM head: 109,514,298 == HF BertForMaskedLM (no pooler). The paper's "110M" is
    # BertModel with the pooler (109,482,240) rounded up.
    ('configs/bert.py:base', 'lm', 109_514_298),
    # BERT-base, classification head: pooler (768*768+768) + classifier (768*2+2) on the encoder:
    # 109,483,778 == HF BertForSequenceClassification with 2 labels.
    ('configs/bert.py:base', 'classification', 109_483_778),
    # GPT-2 small with the LM head tied to the token embedding: exactly the 124,439,808 of HF
    # GPT2LMHeadModel (the paper's table says 117M, a count later corrected by OpenAI).
    ('configs/gpt2.py:small', 'lm', 124_439_808),
    # T5-small (v1.0): 60,506,624 == HF t5-small (relative bias in the first layer of each stack
    # there, once per stack here: same 2 * 32 * 8 numbers). Paper: "60 million".
    ('configs/t5.py:small', 'lm', 60_506_624),
    # The 2017 Transformer base with one shared 37000-token vocabulary (embedding + tied output):
    # 63,082,496. The paper's 65M is not reproducible from its stated sizes; a separate target
    # embedding (+18.9M) would overshoot, so the gap is most likely a different vocabulary size.
    ('configs/transformer.py:base', 'lm', 63_082_496),
    # BART-base: 139,467,609 = HF BartForConditionalGeneration's 139,420,416 parameters
    # - 2 * 2 * 768 (HF keeps 2 extra position rows, an offset quirk from fairseq, in each
    # stack's 1026-row table; we keep 1024) + 50,265 (final_logits_bias: a buffer in HF, a
    # parameter here).
    ('configs/bart.py:base', 'lm', 139_467_609),
    # T5 v1.1 small (gated GELU, untied logits): 76,961,152 == HF google/t5-v1_1-small ("77M").
    ('configs/t5.py:v1_1_small', 'lm', 76_961_152),
    # The large sizes (issue 24's fit table): HF t5-large 737,668,096 and google/t5-v1_1-large
    # 783,150,080 exactly; GPT2LMHeadModel gpt2-large 774,030,080; BertForMaskedLM
    # bert-large-uncased 335,174,458; BART-large = HF's 406,291,456 - 2 * 2 * 1024 + 50,265
    # (the same offset rows and final_logits_bias as BART-base above).
    ('configs/t5.py:large', 'lm', 737_668_096),
    ('configs/t5.py:v1_1_large', 'lm', 783_150_080),
    ('configs/gpt2.py:large', 'lm', 774_030_080),
    ('configs/bert.py:large', 'lm', 335_174_458),
    ('configs/bart.py:large', 'lm', 406_337_625),
]


@pytest.mark.parametrize('spec,head,expected', PRESET_COUNTS,
                         ids=[f'{s.split("/")[1]}-{h}' for s, h, _ in PRESET_COUNTS])
def test_published_parameter_counts(spec, head, expected):
  assert _count(spec, head) == expected


# ------------------------------------------------------------------- bad configs


BAD_MODELS = [
    (dict(num_heads=5), 'model.num_heads'),
    (dict(positions='xpos'), 'model.positions'),   # alibi and none are positions now
    (dict(activation='tanh'), 'model.activation'),
    (dict(norm='batchnorm'), 'model.norm'),
    (dict(num_decoder_layers=2), 'model.num_decoder_layers'),  # decoder-only: no cross-attention
    (dict(type_vocab_size=2), 'model.type_vocab_size'),  # token types on a decoder
    (dict(num_kv_heads=3), 'model.num_kv_heads'),
    (dict(vocab_size=0), 'model.vocab_size'),
    (dict(remat='some'), 'model.remat'),
]


@pytest.mark.parametrize('overrides,key', BAD_MODELS, ids=[k for _, k in BAD_MODELS])
def test_bad_model_config_fails_at_build_time(overrides, key):
  with pytest.raises(ConfigError) as err:
    models.build(_tiny(**overrides), rngs=nnx.Rngs(0))
  assert key in str(err.value) and '\n' not in str(err.value)


def test_unknown_model_key_is_named():
  cfg = _tiny()
  cfg.unlock()
  cfg.num_layerz = 3
  with pytest.raises(ConfigError, match='model.num_layerz'):
    models.build(cfg, rngs=nnx.Rngs(0))


def test_classification_head_on_encoder_decoder_fails():
  with pytest.raises(ConfigError) as err:
    models.build(_tiny(family='encoder_decoder'), head='classification', rngs=nnx.Rngs(0))
  assert 'encoder_decoder' in str(err.value) and '\n' not in str(err.value)


def test_learned_positions_shorter_than_seq_len_fail_validation():
  config = config_lib.load_file('configs/gpt2.py:tiny')
  config.data.seq_len = config.model.max_len + 1
  with pytest.raises(ConfigError) as err:
    config_lib.validate(config)
  assert 'data.seq_len' in str(err.value) and 'model.max_len' in str(err.value)
  config.model.positions = 'rotary'  # no table: any length is fine
  config_lib.validate(config)


@pytest.mark.parametrize('overrides,needle', [
    ({'model.num_layerz': '3'}, 'model.num_layerz'),
    ({'modle.num_layers': '3'}, 'modle'),
    ({'train.steps': 'many'}, 'train.steps'),
    ({'model.scan_layers': 'maybe'}, 'model.scan_layers'),
    ({'train.steps': 2.5}, 'train.steps'),
])
def test_apply_overrides_rejects_unknown_keys_and_wrong_types(overrides, needle):
  config = config_lib.load_file('configs/gpt2.py:tiny')
  with pytest.raises(ConfigError) as err:
    config_lib.apply_overrides(config, overrides)
  assert needle in str(err.value) and '\n' not in str(err.value)


def test_apply_overrides_parses_types():
  config = config_lib.load('configs/gpt2.py:tiny', {'model.num_layers': '4',
                                                    'model.scan_layers': 'true',
                                                    'opt.learning_rate': '1e-3'})
  assert config.model.num_layers == 4 and config.model.scan_layers is True
  assert config.opt.learning_rate == 1e-3


# ------------------------------------------------------------------- scan == loop, remat == none


def _copy_into_scanned(loop_model, scan_model):
  """Stack the loop model's per-layer params along a leading axis and load them into scan_model."""
  loop_flat = dict(nnx.to_flat_state(nnx.state(loop_model, nnx.Param)))
  new = {}
  for path, var in nnx.to_flat_state(nnx.state(scan_model, nnx.Param)):
    if 'layers' in path:
      i = path.index('layers') + 1
      per_layer = [loop_flat[path[:i] + (n,) + path[i:]][...] for n in range(var.shape[0])]
      new[path] = var.replace(jnp.stack(per_layer))
    else:
      new[path] = var.replace(loop_flat[path][...])
  nnx.update(scan_model, nnx.State.from_flat_path(new))


def _inputs(family, batch=2, length=9, vocab=31, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  tokens = jax.random.randint(k1, (batch, length), 1, vocab)
  if family == 'encoder_decoder':
    return (tokens, jax.random.randint(k2, (batch, length - 2), 1, vocab))
  return (tokens,)


@pytest.mark.parametrize('family', ['decoder', pytest.param('encoder', marks=pytest.mark.slow),
                                    'encoder_decoder'])
def test_scan_layers_equals_loop(family):
  loop = models.build(_tiny(family=family, num_layers=3), rngs=nnx.Rngs(0))
  scan = models.build(_tiny(family=family, num_layers=3, scan_layers=True), rngs=nnx.Rngs(1))
  args = _inputs(family)
  forward = nnx.jit(lambda model, *a: model(*a))  # one compile per model, reused after the copy
  want = forward(loop, *args)
  assert not np.allclose(forward(scan, *args), want, atol=1e-3)  # different init before the copy
  _copy_into_scanned(loop, scan)
  np.testing.assert_allclose(forward(scan, *args), want, atol=1e-5, rtol=1e-5)


def _lm_loss(model, args):
  """Next-token (decoder), same-token (encoder) or target (encoder-decoder) cross-entropy."""
  if model.hp.family == 'encoder_decoder':
    inputs, targets = args
    dec_in = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))
    logits, labels = model(inputs, dec_in), targets
  elif model.hp.family == 'decoder':
    logits, labels = model(args[0][:, :-1]), args[0][:, 1:]
  else:
    logits, labels = model(args[0]), args[0]
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize('remat,scan', [('full', False), ('dots', False),
                                         pytest.param('full', True, marks=pytest.mark.slow)])
def test_remat_gives_same_loss_and_gradients(remat, scan):
  args = _inputs('decoder')
  results = []
  for policy in ('none', remat):
    model = models.build(_tiny(remat=policy, scan_layers=scan), rngs=nnx.Rngs(0))
    loss, grads = nnx.jit(nnx.value_and_grad(_lm_loss))(model, args)
    results.append((loss, grads))
  (loss0, grads0), (loss1, grads1) = results
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               grads1, grads0)
  assert jax.tree.structure(grads0) == jax.tree.structure(grads1)


# ------------------------------------------------------------------- dtypes


@pytest.mark.parametrize('family', ['decoder', pytest.param('encoder', marks=pytest.mark.slow),
                                    'encoder_decoder'])
def test_bfloat16_compute_gives_float32_logits(family):
  model = models.build(_tiny(family=family, dtype='bfloat16'), rngs=nnx.Rngs(0))
  forward = nnx.jit(lambda m, *a: m(*a))
  logits = forward(model, *_inputs(family))
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)  # params stay in param_dtype
  f32 = models.build(_tiny(family=family), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(logits, forward(f32, *_inputs(family)), atol=0.1)  # bf16 ~ 3 digits


# ------------------------------------------------------------------- every family trains

LOSS_DROP = 0.25  # 30 Adam steps (lr 1e-2) on one fixed batch: loss at least 4x lower
# (observed: ~3.4 -> 0.07 decoder, 3.1 -> 0.01 encoder, 3.5 -> 0.18 encoder-decoder)


def _train(model, loss_fn, steps=30, lr=1e-2):
  optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
  losses = [float(step(model, optimizer)) for _ in range(steps)]
  return losses[0], float(nnx.jit(loss_fn)(model))


@pytest.mark.parametrize('family', ['decoder', 'encoder', 'encoder_decoder'])
def test_every_family_trains(family):
  model = models.build(_tiny(family=family, num_layers=1), rngs=nnx.Rngs(0))
  args = _inputs(family, batch=4, length=12)
  first, last = _train(model, lambda m: _lm_loss(m, args))
  assert np.isfinite(last) and last < LOSS_DROP * first, (first, last)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['decoder', 'encoder'])
def test_classification_head_trains(family):
  model = models.build(_tiny(family=family, classifier_pooler=True, num_classes=3),
                       head='classification', rngs=nnx.Rngs(0))
  tokens = _inputs(family, batch=8)[0]
  labels = jnp.arange(8) % 3

  def loss_fn(m):
    logits = m(tokens)
    assert logits.shape == (8, 3)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  first, last = _train(model, loss_fn)
  assert np.isfinite(last) and last < LOSS_DROP * first, (first, last)
