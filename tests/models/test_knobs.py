"""The architecture knobs (models/knobs.py, issue 27): ALiBi and NoPE positions, QK-norm, the
attention soft-cap, sliding-window attention and its local/global pattern, the parallel block,
the logit soft-cap and z-loss.

  * each against a reference computed here: the paper's ALiBi slopes and bias written out, an
    explicit band mask over plain softmax, a plain tanh, QK-norm by hand, the parallel block as
    a hand composition of its sublayers, z-loss as its formula;
  * per knob: a packed row equals its examples run one by one, and cached greedy decoding
    equals the full forward pass (decoder; the encoder and encoder-decoder where it applies);
  * an interleaved pattern under scan_layers equals the unrolled stack;
  * each bad value is one line naming the key (the train CLI: exit 2, nothing written), and
    export-hf refuses a knob Hugging Face cannot express, naming it, writing nothing;
  * a tiny decoder with each knob trains on text of the embedded corpus.
The sharded step on 8 fake devices is tests/models/test_knobs_sharding.py.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from tests.models.test_attention import (EXAMPLES, TARGETS, TOL, _check_decoder_generation,
                                         _forward, _pack_rows, _separate_rows,
                                         _assert_packed_equals_separate)
from tests.models.test_models import _copy_into_scanned
from transformer import config as config_lib
from transformer import models, train
from transformer.errors import ConfigError
from transformer.hf import architectures, export
from transformer.models import attention, blocks, decoding, layers
from transformer.monitoring import accounting
from transformer.objectives import losses

# Small caps and a window of 2 so that every knob changes the numbers of these tiny models.
KNOBS = {
    'alibi': dict(positions='alibi'),
    'nope': dict(positions='none'),
    'qk_norm': dict(qk_norm='rmsnorm', positions='rotary'),
    'attention_softcap': dict(attention_softcap=0.5),
    'local_window': dict(local_window=2, attention_pattern='1:1'),
    'parallel_block': dict(parallel_block=True),
    'logit_softcap': dict(logit_softcap=0.5),
}
# The default run keeps these (a compile each); the rest are also covered by the combined
# encoder-decoder test (every knob but NoPE, causal in its decoder) and run with -m slow.
DEFAULT = ('nope', 'local_window')


def _knobs(default=DEFAULT):
  return [pytest.param(k, marks=() if k in default else (pytest.mark.slow,)) for k in KNOBS]


def _config(**overrides):
  base = dict(vocab_size=37, num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=32,
              dropout_rate=0.0, attention_dropout_rate=0.0, init_std=0.1, num_kv_heads=2)
  return common.model_config(**{**base, **overrides})


def _softmax_attention(q_TNH, k_SNH, v_SNH, allowed_TS, bias_NTS=0.0, cap=0.0):
  """Plain numpy attention of one row: scale, cap, bias, mask, softmax."""
  logits = np.einsum('tnh,snh->nts', q_TNH, k_SNH) / np.sqrt(q_TNH.shape[-1])
  if cap:
    logits = cap * np.tanh(logits / cap)
  logits = np.where(allowed_TS[None], logits + bias_NTS, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('nts,snh->tnh', weights, v_SNH)


def _qkv(t=10, n=4, h=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [np.asarray(jax.random.normal(k, (1, t, n, h))) for k in keys]


def _attend(q, k, v, *, causal, window=None, bias=None, softcap=0.0, impl='xla'):
  t = q.shape[1]
  seg, pos = jnp.ones((1, t), jnp.int32), jnp.arange(t)[None]
  mask = attention.attention_mask(seg, seg, pos, pos, causal=causal, window=window)
  return np.asarray(attention.attend(q, k, v, mask, bias=bias, scale=q.shape[-1] ** -0.5,
                                     softcap=softcap, implementation=impl))


# ------------------------------------------------------------------- independent references


@pytest.mark.parametrize('n,want', [
    (4, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]),
    (8, [2 ** -1, 2 ** -2, 2 ** -3, 2 ** -4, 2 ** -5, 2 ** -6, 2 ** -7, 2 ** -8]),
    (6, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]),   # 4's, then 8's odd ones
    (12, [2 ** -i for i in range(1, 9)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5])])
def test_alibi_slopes_are_the_papers(n, want):
  np.testing.assert_allclose(layers.alibi_slopes(n), want, rtol=1e-12)


def test_alibi_bias_is_minus_slope_times_distance_in_positions():
  pos = jnp.asarray(np.array([[0, 1, 2, 3, 0, 1, 2]]))   # two packed examples
  bias = np.asarray(layers.alibi_bias(pos, pos, 4))
  slopes = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]
  p = np.asarray(pos[0])
  for n, m in enumerate(slopes):
    np.testing.assert_allclose(bias[0, n], -m * np.abs(p[:, None] - p[None, :]), rtol=1e-6)
    causal = p[None, :] <= p[:, None]   # the causal form -m (i - j) where j <= i
    np.testing.assert_allclose(bias[0, n][causal], (-m * (p[:, None] - p[None, :]))[causal],
                               rtol=1e-6)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('impl', ['xla', 'reference'])
def test_local_window_equals_an_explicit_band_mask(causal, impl):
  q, k, v = _qkv()
  w, t = 3, q.shape[1]
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  band = (j <= i) & (j > i - w) if causal else np.abs(i - j) < w
  want = _softmax_attention(q[0], k[0], v[0], band)
  np.testing.assert_allclose(_attend(q, k, v, causal=causal, window=w, impl=impl)[0], want,
                             atol=1e-5)
  traced = jax.jit(lambda w: attention.attention_mask(
      jnp.ones((1, t)), jnp.ones((1, t)), jnp.arange(t)[None], jnp.arange(t)[None],
      causal=causal, window=w))
  np.testing.assert_array_equal(np.asarray(traced(w))[0, 0], band)   # a scanned layer's window
  assert np.asarray(traced(0)).all() == (not causal)                 # 0: global


def test_softcap_equals_a_plain_tanh():
  q, k, v = (x * 4 for x in _qkv(seed=1))   # logits well past the cap
  t = q.shape[1]
  want = _softmax_attention(q[0], k[0], v[0], np.tril(np.ones((t, t), bool)), cap=2.0)
  for impl in ('xla', 'reference'):
    np.testing.assert_allclose(_attend(q, k, v, causal=True, softcap=2.0, impl=impl)[0], want,
                               atol=1e-5)
  x = np.linspace(-50, 50, 11, dtype=np.float32)
  np.testing.assert_allclose(layers.softcap(jnp.asarray(x), 30.0), 30 * np.tanh(x / 30),
                             rtol=1e-6)


def test_logit_softcap_caps_the_models_logits():
  tokens = jax.random.randint(jax.random.key(0), (2, 9), 1, 37)
  plain = _forward(models.build(_config(init_std=1.0), rngs=nnx.Rngs(0)), tokens)
  capped = _forward(models.build(_config(init_std=1.0, logit_softcap=3.0), rngs=nnx.Rngs(0)),
                    tokens)
  assert np.abs(np.asarray(plain)).max() > 3.0
  np.testing.assert_allclose(capped, 3.0 * np.tanh(np.asarray(plain) / 3.0), atol=1e-5)


@pytest.mark.parametrize('kind', ['rmsnorm', 'layernorm'])
def test_qk_norm_equals_normalising_queries_and_keys_by_hand(kind):
  mha = attention.MultiHeadAttention(32, 4, num_kv_heads=2, init_std=0.3, qk_norm=kind,
                                     norm_eps=1e-6, rngs=nnx.Rngs(0))
  draw = lambda i, shape: jax.random.normal(jax.random.key(10 + i), shape)
  for i, norm in enumerate((mha.query_norm, mha.key_norm)):   # not the identity
    norm.scale.value = 1 + draw(i, (8,))
    if kind == 'layernorm':
      norm.bias.value = draw(i + 5, (8,))
  x = draw(9, (1, 6, 32))
  seg, pos = jnp.ones((1, 6), jnp.int32), jnp.arange(6)[None]
  got = mha(x, q_segment_ids=seg, q_positions=pos, causal=True)

  def by_hand(y, norm):
    y = np.asarray(y, np.float64)
    if kind == 'layernorm':
      y = y - y.mean(-1, keepdims=True)
    y = y / np.sqrt((y ** 2).mean(-1, keepdims=True) + 1e-6) * np.asarray(norm.scale.value)
    return y + (np.asarray(norm.bias.value) if kind == 'layernorm' else 0)
  q = by_hand(mha.query(x), mha.query_norm)[0]
  k = np.repeat(by_hand(mha.key(x), mha.key_norm)[0], 2, axis=1)   # grouped: 2 kv heads
  v = np.repeat(np.asarray(mha.value(x))[0], 2, axis=1)
  out = _softmax_attention(q, k, v, np.tril(np.ones((6, 6), bool)))
  np.testing.assert_allclose(got[0], np.asarray(mha.out(jnp.asarray(out, jnp.float32))),
                             atol=1e-5)


def test_parallel_block_is_attention_plus_mlp_of_one_norm():
  hp = models.HParams.from_config(_config(parallel_block=True))
  block = blocks.Block(hp, cross_attention=False, rngs=nnx.Rngs(0))
  assert block.mlp_norm is None   # one norm for both
  x = jax.random.normal(jax.random.key(1), (2, 7, 32))
  seg, pos = jnp.ones((2, 7), jnp.int32), jnp.broadcast_to(jnp.arange(7), (2, 7))
  got = block(x, segment_ids=seg, positions=pos, causal=True)
  h = block.attention_norm(x)
  want = x + block.self_attention(h, q_segment_ids=seg, q_positions=pos, causal=True) + (
      block.mlp(h))
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize('kernels', ['tuned', 'plain'])
def test_z_loss_is_its_formula_over_the_scored_tokens(kernels):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32) * 3
  labels = rng.integers(0, 11, (2, 5))
  weights = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], np.float32)
  z = 1e-2
  m = logits.max(-1, keepdims=True)
  log_z = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  xent = log_z - np.take_along_axis(logits, labels[..., None], -1)[..., 0]
  loss, metrics = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                       jnp.asarray(weights), z_loss=z, kernels=kernels)
  count = weights.sum()
  np.testing.assert_allclose(loss, ((xent * weights).sum() + z * (log_z ** 2 * weights).sum())
                             / count, rtol=1e-5)
  np.testing.assert_allclose(metrics['z_loss'][0] / metrics['z_loss'][1],
                             z * (log_z ** 2 * weights).sum() / count, rtol=1e-5)


# ------------------------------------------------------------------- packed, cached, scanned


@pytest.mark.parametrize('knob', _knobs())
def test_decoder_packed_equals_separate_and_cached_equals_full(knob):
  model = models.build(_config(**KNOBS[knob]), rngs=nnx.Rngs(0))
  tokens, seg, pos = _pack_rows(EXAMPLES)
  packed = _forward(model, tokens, seg, pos)
  tokens, seg, pos = _separate_rows(EXAMPLES)
  _assert_packed_equals_separate(packed, _forward(model, tokens, seg, pos), EXAMPLES)
  prompt = jax.random.randint(jax.random.key(4), (2, 5), 4, 37)
  _check_decoder_generation(model, prompt, n=6, prefix_lm=False)


BIDIRECTIONAL = dict(positions='alibi', local_window=2, attention_pattern='gl', qk_norm='layernorm',
                     attention_softcap=0.5, parallel_block=True, logit_softcap=0.5)


def test_encoder_packed_equals_separate():
  """The bidirectional forms: ALiBi's |i - j| and the window |i - j| < w, with the rest on."""
  model = models.build(_config(family='encoder', **BIDIRECTIONAL), rngs=nnx.Rngs(0))
  tokens, seg, pos = _pack_rows(EXAMPLES)
  packed = _forward(model, tokens, seg, pos)
  tokens, seg, pos = _separate_rows(EXAMPLES)
  _assert_packed_equals_separate(packed, _forward(model, tokens, seg, pos), EXAMPLES)


def test_encoder_decoder_packed_equals_separate_and_cached_equals_full():
  model = models.build(_config(family='encoder_decoder', **BIDIRECTIONAL), rngs=nnx.Rngs(0))

  def run(layout):
    inputs, in_seg, in_pos = layout(EXAMPLES)
    targets, t_seg, t_pos = layout(TARGETS, length=10)
    dec_in = jnp.where(t_pos == 0, 0, jnp.roll(targets, 1, axis=1))
    return _forward(model, inputs, dec_in, in_seg, in_pos, t_seg, t_pos)
  _assert_packed_equals_separate(run(_pack_rows), run(_separate_rows), TARGETS)
  inputs = jax.random.randint(jax.random.key(6), (2, 7), 4, 37)
  in_seg = jnp.array([[1] * 7, [1] * 5 + [0] * 2], jnp.int32)
  tokens, logits = decoding.generate_seq2seq(model, inputs, in_seg, max_new_tokens=6,
                                             eos_id=-1, return_logits=True)
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), tokens[:, :-1]], axis=1)
  full = _forward(model, inputs, dec_in, in_seg)
  np.testing.assert_allclose(logits, full, atol=TOL, rtol=TOL)
  np.testing.assert_array_equal(tokens, jnp.argmax(full, axis=-1))


@pytest.mark.slow
@pytest.mark.parametrize('pattern', ['1:1', 'gll'])
def test_scanned_interleaved_pattern_equals_the_unrolled_stack(pattern):
  knobs = dict(num_layers=4, local_window=2, attention_pattern=pattern, positions='alibi')
  loop = models.build(_config(**knobs), rngs=nnx.Rngs(0))
  scan = models.build(_config(scan_layers=True, **knobs), rngs=nnx.Rngs(1))
  _copy_into_scanned(loop, scan)
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 1, 37)
  np.testing.assert_allclose(_forward(scan, tokens), _forward(loop, tokens), atol=1e-5,
                             rtol=1e-5)
  _check_decoder_generation(scan, tokens[:, :4], n=5, prefix_lm=False)   # cached, scanned
  global_ = models.build(_config(**{**knobs, 'local_window': 0, 'attention_pattern': 'local'}),
                         rngs=nnx.Rngs(0))
  assert not np.allclose(_forward(global_, tokens), _forward(loop, tokens), atol=1e-3)


def test_layer_patterns():
  hp = lambda **kw: models.HParams.from_config(_config(local_window=4, **kw))
  assert hp().layer_windows(3) == (4, 4, 4)
  assert hp(attention_pattern='5:1').layer_windows(7) == (4, 4, 4, 4, 4, 0, 4)   # Gemma 3
  assert hp(attention_pattern='gll').layer_windows(4) == (0, 4, 4, 0)            # ModernBERT


# ------------------------------------------------------------------- refusals


BAD = [
    (dict(local_window=-1), 'local_window=-1'),
    (dict(local_window=4, attention_pattern='every other'), "attention_pattern='every other'"),
    (dict(local_window=4, attention_pattern='0:1'), "attention_pattern='0:1'"),
    (dict(attention_pattern='1:1'), "attention_pattern='1:1'"),
    (dict(positions='none', family='encoder'), "positions='none'"),
    (dict(positions='none', family='encoder_decoder'), "positions='none'"),
    (dict(parallel_block=True, norm_position='post'), 'parallel_block=True'),
    (dict(qk_norm='l2'), "qk_norm='l2'"),
    (dict(attention_softcap=-1.0), 'attention_softcap=-1.0'),
    (dict(logit_softcap=float('nan')), 'logit_softcap=nan'),
]


@pytest.mark.parametrize('overrides,needle', BAD, ids=[n for _, n in BAD])
def test_bad_values_are_one_line_naming_the_key(overrides, needle):
  with pytest.raises(ConfigError) as e:
    models.HParams.from_config(_config(**overrides))
  message = str(e.value)
  assert message.startswith(f'`model.{needle}`') and '\n' not in message, message
  assert 'choose one of' not in message or needle.startswith('qk_norm'), message   # not unknown


def test_the_train_cli_refuses_nope_in_an_encoder_writing_nothing(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train.main(['--config', 'configs/bert.py:tiny', f'--workdir={tmp_path}',
                '--config.model.positions=none'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.startswith("error: `model.positions='none'`: NoPE"), err
  assert '\n' not in err and not os.listdir(tmp_path)


EXPORT_REFUSED = [('configs/gpt2.py:tiny', dict(positions='alibi'), 'positions'),
                  ('configs/bert.py:tiny', dict(qk_norm='rmsnorm'), 'qk_norm'),
                  ('configs/gpt2.py:tiny', dict(local_window=8), 'local_window'),
                  ('configs/gpt2.py:tiny', dict(attention_softcap=50.0), 'attention_softcap'),
                  ('configs/gpt2.py:tiny', dict(parallel_block=True), 'parallel_block'),
                  ('configs/t5.py:tiny', dict(logit_softcap=30.0), 'logit_softcap'),
                  ('configs/bart.py:tiny', dict(positions='alibi'), 'positions'),
                  ('configs/gpt2.py:tiny', dict(mup_base_width=64), 'mup_base_width'),
                  ('configs/bert.py:tiny', dict(mup_base_width=64), 'mup_base_width')]


@pytest.mark.parametrize('spec,knob,key', EXPORT_REFUSED, ids=[k for _, _, k in EXPORT_REFUSED])
def test_export_hf_refuses_what_hugging_face_cannot_express(spec, knob, key):
  model = config_lib.load_file(spec).model
  model.update(vocab_size=64, **knob)
  with pytest.raises(ConfigError) as e:
    architectures.architecture(models.HParams.from_config(model), 'lm')
  message = str(e.value)
  assert message.startswith(f'`model.{key}=') and 'Hugging Face' in message, message
  assert '\n' not in message


def test_export_run_refusal_writes_nothing(tmp_path):
  config = config_lib.load('configs/gpt2.py:tiny', {'model.positions': 'alibi',
                                                    'model.vocab_size': '64'})
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text(json.dumps(config.to_dict()))
  with pytest.raises(ConfigError, match=r"^`model.positions='alibi'`: Hugging Face GPT2"):
    export.export_run(run, tmp_path / 'out')
  assert sorted(os.listdir(tmp_path)) == ['run']


# ------------------------------------------------------------------- backends, accounting


def test_choose_keeps_alibi_off_splash_and_softcap_off_cudnn():
  facts = dict(dtype='bfloat16', head_dim=64, lengths=(1024,))
  impl, why = attention.choose('auto', platform='tpu', bias='alibi', **facts)
  assert impl == 'xla' and "ALiBi's distance bias" in why
  with pytest.raises(ConfigError, match=r"^`model.attention_impl=splash`: ALiBi"):
    attention.choose('splash', platform='tpu', bias='alibi', **facts)
  assert attention.choose('auto', platform='tpu', softcap=True, **facts)[0] == 'splash'
  impl, why = attention.choose('auto', platform='gpu', softcap=True, capability=(9, 0), **facts)
  assert impl == 'xla' and 'no logit soft-cap' in why and 'einsum form' in why
  with pytest.raises(ConfigError, match='no logit soft-cap'):
    attention.choose('cudnn', platform='gpu', softcap=True, capability=(9, 0), **facts)


@pytest.mark.parametrize('case', ['causal-window-softcap',
                                  pytest.param('bidirectional-window', marks=pytest.mark.slow),
                                  pytest.param('traced-window', marks=pytest.mark.slow)])
def test_splash_expresses_the_window_and_the_softcap(case):
  """Splash (Pallas interpret mode here) equals the XLA path on packed rows with grouped KV
  heads: LocalMask for a static window, the dynamic mask for a scanned layer's traced one."""
  t, w = 128, 16
  seg = np.repeat(np.array([[1] * 50 + [2] * 60 + [0] * 18]), 2, axis=0)
  pos = np.concatenate([np.arange(50), np.arange(60), np.zeros(18, int)])[None].repeat(2, 0)
  seg, pos = jnp.asarray(seg, jnp.int32), jnp.asarray(pos, jnp.int32)
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (2, t, 4, 32)) * 2
  k, v = (jax.random.normal(key, (2, t, 2, 32)) for key in keys[1:])
  causal, cap = case != 'bidirectional-window', 1.0 if 'softcap' in case else 0.0

  def run(impl, window):
    st = attention.Structure(seg, seg, pos, pos, causal, window=window)
    mask = attention.attention_mask(seg, seg, pos, pos, causal=causal, window=window)
    return attention.attend(q, k, v, mask, scale=32 ** -0.5, implementation=impl, structure=st,
                            softcap=cap)
  if case == 'traced-window':
    got = jax.jit(lambda w: run('splash', w))(jnp.int32(w))
  else:
    got = run('splash', w)
  keep = np.asarray(seg != 0)
  np.testing.assert_allclose(np.asarray(got)[keep], np.asarray(run('xla', w))[keep], atol=5e-6,
                             rtol=5e-6)


def test_local_layers_count_only_their_window_of_attention_flops():
  def scores(spec, **model):
    config = config_lib.load(spec, {'data.seq_len': '64', **{f'model.{k}': str(v)
                                                             for k, v in model.items()}})
    return accounting.flops_per_token(config)['attention_scores']
  full = scores('configs/gpt2.py:tiny')
  assert scores('configs/gpt2.py:tiny', local_window=8) == pytest.approx(full * 8 / 64)
  # tiny GPT-2 has 2 layers: '1:1' makes one of them local
  assert scores('configs/gpt2.py:tiny', local_window=8, attention_pattern='1:1') == (
      pytest.approx(full * (8 + 64) / 2 / 64))
  bert = scores('configs/bert.py:tiny')
  assert scores('configs/bert.py:tiny', local_window=8) == pytest.approx(bert * 15 / 64)


# ------------------------------------------------------------------- each knob trains


def _corpus_tokens(rows=4, length=33, vocab=37):
  """Text of the embedded corpus (the language reference in pydoc_data), as byte ids."""
  from pydoc_data import topics   # pylint: disable=import-outside-toplevel
  text = ' '.join(topics.topics[k] for k in sorted(topics.topics)[:4]).encode()
  ids = np.frombuffer(text[:rows * length], np.uint8).astype(np.int32) % (vocab - 1) + 1
  return jnp.asarray(ids.reshape(rows, length))


@pytest.mark.parametrize('knob', _knobs(('alibi', 'parallel_block')))
def test_a_tiny_decoder_trains_with_each_knob(knob):
  knobs = {**KNOBS[knob], 'logit_softcap': 5.0} if knob == 'logit_softcap' else KNOBS[knob]
  model = models.build(_config(num_layers=1, **knobs), rngs=nnx.Rngs(0))
  tokens = _corpus_tokens()
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  def loss_fn(m):
    logits = m(tokens[:, :-1])
    loss, _ = losses.cross_entropy(logits, tokens[:, 1:], jnp.ones(tokens[:, 1:].shape),
                                   z_loss=1e-4)
    return loss

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
  losses_ = [float(step(model, optimizer)) for _ in range(30)]
  assert np.isfinite(losses_[-1]) and losses_[-1] < 0.5 * losses_[0], (knob, losses_[::10])
