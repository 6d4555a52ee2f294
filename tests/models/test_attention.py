"""The attention table: bidirectional / causal / prefix x packed / unpacked x cached / full.

Everything runs in float32 on CPU. What is checked:
  * the mask helper against a hand-written table;
  * every backend equals the 'reference' einsum-softmax on non-padding query rows (grouped KV
    heads and an additive bias included); 'cudnn' only where a GPU is present;
  * a packed row equals its examples run one by one (MultiHeadAttention and whole tiny models);
  * cached decoding (transformer.decoding) equals recomputing the full sequence;
  * causality by gradients: d out[t] / d x[t'] == 0 for every t' > t.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from transformer import models
from transformer.models import attention
from transformer.models import decoding

MODES = ('bidirectional', 'causal', 'prefix')
BACKENDS = ('xla', 'reference', 'cudnn')
TOL = 1e-5

# One packed row: three examples of lengths 4, 3 and 2, then 3 padding tokens.
PACKED_SEGMENTS = np.array([[1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0, 0]], np.int32)
PACKED_POSITIONS = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 0, 0]], np.int32)
# Prefix (prefix-LM): the first two tokens of each example.
PACKED_PREFIX = np.array([[1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0]], np.int32)
EXAMPLE_SPANS = ((0, 4), (4, 7), (7, 9))


def _skip_unless_backend(impl):
  if impl == 'cudnn' and jax.default_backend() != 'gpu':
    pytest.skip('cudnn needs an NVIDIA GPU')


def _structure(mode, packed, batch=2, length=12):
  """(segment_ids, positions, prefix or None, causal) for one cell of the table."""
  if packed:
    seg, pos, pre = (np.repeat(a, batch, axis=0) for a in (PACKED_SEGMENTS, PACKED_POSITIONS,
                                                           PACKED_PREFIX))
  else:  # one example per row, the second row padded after 7 tokens
    seg = np.ones((batch, length), np.int32)
    seg[1, 7:] = 0
    pos = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)).copy()
    pre = (pos < 3).astype(np.int32)
  prefix = jnp.asarray(pre) if mode == 'prefix' else None
  return jnp.asarray(seg), jnp.asarray(pos), prefix, mode != 'bidirectional'


def _model_config(**overrides):
  base = dict(vocab_size=37, num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=32,
              dropout_rate=0.0, attention_dropout_rate=0.0, init_std=0.1)
  return common.model_config(**{**base, **overrides})


# Whole models run under one jit: far cheaper to compile than op-by-op eager dispatch.
_forward = nnx.jit(lambda model, *args: model(*args))


def _mha(num_kv_heads=0, **kw):
  return attention.MultiHeadAttention(32, 4, num_kv_heads=num_kv_heads, init_std=0.3,
                                      rngs=nnx.Rngs(0), **kw)


# ----------------------------------------------------------------------------- the mask helper


def test_mask_table_exact():
  seg = jnp.array([[1, 1, 2, 2, 0]])
  pos = jnp.array([[0, 1, 0, 1, 0]])
  pre = jnp.array([[1, 0, 1, 1, 0]])
  bidirectional = np.array([[1, 1, 0, 0, 0],
                            [1, 1, 0, 0, 0],
                            [0, 0, 1, 1, 0],
                            [0, 0, 1, 1, 0],
                            [0, 0, 0, 0, 0]], bool)
  causal = np.array([[1, 0, 0, 0, 0],
                     [1, 1, 0, 0, 0],
                     [0, 0, 1, 0, 0],
                     [0, 0, 1, 1, 0],
                     [0, 0, 0, 0, 0]], bool)
  # Example 2 is all prefix: its first token also sees its second one.
  prefix = causal.copy()
  prefix[2, 3] = True
  got = lambda **kw: np.asarray(attention.attention_mask(seg, seg, pos, pos, **kw))[0, 0]
  np.testing.assert_array_equal(got(causal=False), bidirectional)
  np.testing.assert_array_equal(got(causal=True), causal)
  np.testing.assert_array_equal(got(causal=True, q_prefix=pre, kv_prefix=pre), prefix)
  # The prefix only matters with causal=True (bidirectional already sees everything).
  np.testing.assert_array_equal(got(causal=False, q_prefix=pre, kv_prefix=pre), bidirectional)


def test_mask_cross_attention_shapes():
  q_seg = jnp.array([[1, 1, 2]])
  kv_seg = jnp.array([[1, 2, 2, 0]])
  mask = attention.attention_mask(q_seg, kv_seg, jnp.zeros((1, 3), jnp.int32),
                                  jnp.zeros((1, 4), jnp.int32), causal=False)
  assert mask.shape == (1, 1, 3, 4)
  np.testing.assert_array_equal(np.asarray(mask[0, 0]), [[1, 0, 0, 0], [1, 0, 0, 0],
                                                         [0, 1, 1, 0]])


# ------------------------------------------------------------------- every backend == reference


@pytest.mark.parametrize('impl', BACKENDS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('packed', [False, True], ids=['unpacked', 'packed'])
@pytest.mark.parametrize('kv_heads,with_bias', [(4, False), (2, False), (1, True)],
                         ids=['mha', 'gqa', 'mqa_bias'])
def test_backend_matches_reference(impl, mode, packed, kv_heads, with_bias):
  _skip_unless_backend(impl)
  seg, pos, prefix, causal = _structure(mode, packed)
  b, t = seg.shape
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (b, t, 4, 8))
  k = jax.random.normal(keys[1], (b, t, kv_heads, 8))
  v = jax.random.normal(keys[2], (b, t, kv_heads, 8))
  bias = jax.random.normal(keys[3], (1, 4, t, t)) if with_bias else None
  mask = attention.attention_mask(seg, seg, pos, pos, causal=causal, q_prefix=prefix,
                                  kv_prefix=prefix)
  got = attention.attend(q, k, v, mask, bias=bias, scale=8 ** -0.5, implementation=impl)
  want = attention.attend(q, k, v, mask, bias=bias, scale=8 ** -0.5, implementation='reference')
  real = np.asarray(seg) != 0
  assert got.shape == want.shape == (b, t, 4, 8)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=TOL, rtol=TOL)


def test_reference_is_softmax_of_masked_logits():
  """One hand computation: a single head, a 3-token causal row."""
  q = jnp.array([[[[1.0]], [[2.0]], [[0.5]]]])  # [1, 3, 1, 1]
  k = jnp.array([[[[1.0]], [[-1.0]], [[3.0]]]])
  v = jnp.array([[[[10.0]], [[20.0]], [[30.0]]]])
  seg, pos = jnp.ones((1, 3), jnp.int32), jnp.arange(3)[None]
  mask = attention.attention_mask(seg, seg, pos, pos, causal=True)
  out = np.asarray(attention.attend(q, k, v, mask, implementation='reference'))[0, :, 0, 0]
  w1 = np.exp([2.0, -2.0]) / np.exp([2.0, -2.0]).sum()
  w2 = np.exp([0.5, -0.5, 1.5]) / np.exp([0.5, -0.5, 1.5]).sum()
  np.testing.assert_allclose(out, [10.0, w1 @ [10, 20], w2 @ [10, 20, 30]], rtol=1e-6)


def test_unknown_backend_is_an_error():
  with pytest.raises(ValueError, match='attention_impl'):
    attention.resolve_implementation('flash', jnp.float32)


# ------------------------------------------------------------------- packed == one by one


@pytest.mark.parametrize('impl', BACKENDS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('rotary', [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=['nopos', 'rotary'])
def test_mha_packed_equals_separate(impl, mode, rotary):
  _skip_unless_backend(impl)
  mha = _mha(num_kv_heads=2, implementation=impl, rotary=rotary)
  seg, pos, prefix, causal = _structure(mode, packed=True, batch=1)
  x = jax.random.normal(jax.random.key(1), (1, seg.shape[1], 32))
  packed = mha(x, q_segment_ids=seg, q_positions=pos, causal=causal, q_prefix=prefix)
  # The same examples alone, one per row (padded after them): no other example in the row.
  rows = [jnp.arange(a, b) for a, b in EXAMPLE_SPANS]
  alone_x = jnp.stack([jnp.pad(x[0, r], ((0, 12 - len(r)), (0, 0))) for r in rows])
  alone_seg = jnp.stack([(jnp.arange(12) < len(r)).astype(jnp.int32) for r in rows])
  alone_pos = jnp.broadcast_to(jnp.arange(12), alone_seg.shape)
  alone_prefix = None if prefix is None else jnp.stack(
      [jnp.pad(prefix[0, r], (0, 12 - len(r))) for r in rows])
  alone = mha(alone_x, q_segment_ids=alone_seg, q_positions=alone_pos, causal=causal,
              q_prefix=alone_prefix)
  for i, r in enumerate(rows):
    np.testing.assert_allclose(packed[0, r], alone[i, :len(r)], atol=TOL, rtol=TOL)


def _pack_rows(examples, length=12):
  """Pack 1-D token arrays into one row: (tokens, segment_ids, positions), each [1, length]."""
  tokens, seg, pos = (np.zeros((1, length), np.int32) for _ in range(3))
  i = 0
  for s, ex in enumerate(examples, start=1):
    tokens[0, i:i + len(ex)], seg[0, i:i + len(ex)], pos[0, i:i + len(ex)] = ex, s, np.arange(
        len(ex))
    i += len(ex)
  return jnp.asarray(tokens), jnp.asarray(seg), jnp.asarray(pos)


def _separate_rows(examples, length=12):
  """Each example alone in its own row, padded after it: (tokens, segment_ids, positions)."""
  tokens, seg = (np.zeros((len(examples), length), np.int32) for _ in range(2))
  for i, ex in enumerate(examples):
    tokens[i, :len(ex)], seg[i, :len(ex)] = ex, 1
  pos = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
  return jnp.asarray(tokens), jnp.asarray(seg), jnp.asarray(pos)


def _assert_packed_equals_separate(packed, alone, examples):
  start = 0
  for i, ex in enumerate(examples):
    np.testing.assert_allclose(packed[0, start:start + len(ex)], alone[i, :len(ex)], atol=TOL,
                               rtol=TOL)
    start += len(ex)


EXAMPLES = [np.array([5, 9, 3, 7]), np.array([11, 4, 8]), np.array([6, 12])]
TARGETS = [np.array([13, 14, 15]), np.array([16, 17]), np.array([18, 19, 20, 21])]


@pytest.mark.parametrize('positions,prefix_lm', [
    ('learned', False), ('rotary', True),
    pytest.param('relative', False, marks=pytest.mark.slow),
    pytest.param('learned', True, marks=pytest.mark.slow),
    pytest.param('rotary', False, marks=pytest.mark.slow),
    pytest.param('relative', True, marks=pytest.mark.slow)])
def test_decoder_only_packed_equals_separate(positions, prefix_lm):
  model = models.build(_model_config(positions=positions, num_kv_heads=2), rngs=nnx.Rngs(0))
  prefix_of = lambda seg, pos: ((pos < 2) & (seg > 0)).astype(jnp.int32) if prefix_lm else None
  tokens, seg, pos = _pack_rows(EXAMPLES)
  packed = _forward(model, tokens, seg, pos, prefix_of(seg, pos))
  tokens, seg, pos = _separate_rows(EXAMPLES)
  alone = _forward(model, tokens, seg, pos, prefix_of(seg, pos))
  _assert_packed_equals_separate(packed, alone, EXAMPLES)


def test_encoder_only_packed_equals_separate():
  model = models.build(_model_config(family='encoder', norm_position='post', embed_norm=True,
                                     final_norm=False, type_vocab_size=2, mlm_transform=True),
                       rngs=nnx.Rngs(0))
  tokens, seg, pos = _pack_rows(EXAMPLES)
  packed = _forward(model, tokens, seg, pos, (pos >= 2).astype(jnp.int32))
  tokens, seg, pos = _separate_rows(EXAMPLES)
  alone = _forward(model, tokens, seg, pos, (pos >= 2).astype(jnp.int32))
  _assert_packed_equals_separate(packed, alone, EXAMPLES)


@pytest.mark.parametrize('positions', [
    'relative', pytest.param('learned', marks=pytest.mark.slow),
    pytest.param('sinusoidal', marks=pytest.mark.slow)])
def test_encoder_decoder_packed_equals_separate(positions):
  model = models.build(_model_config(family='encoder_decoder', positions=positions),
                       rngs=nnx.Rngs(0))

  def run(layout):
    inputs, in_seg, in_pos = layout(EXAMPLES)
    targets, t_seg, t_pos = layout(TARGETS, length=10)
    # decoder inputs: targets shifted right inside each segment, 0 at each segment start
    dec_in = jnp.where(t_pos == 0, 0, jnp.roll(targets, 1, axis=1))
    return _forward(model, inputs, dec_in, in_seg, in_pos, t_seg, t_pos)
  _assert_packed_equals_separate(run(_pack_rows), run(_separate_rows), TARGETS)


# ------------------------------------------------------------------- cached == full


@pytest.mark.parametrize('impl', BACKENDS)
@pytest.mark.parametrize('mode', ['causal', 'prefix'])
def test_mha_cache_equals_full(impl, mode):
  """Prefill 4 tokens, then 4 single-token steps: the same outputs as one full pass."""
  _skip_unless_backend(impl)
  mha = _mha(num_kv_heads=2, implementation=impl, rotary=True)
  b, t, p = 2, 8, 4
  x = jax.random.normal(jax.random.key(2), (b, t, 32))
  seg = jnp.ones((b, t), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  prefix = (pos < p).astype(jnp.int32) if mode == 'prefix' else None
  full = mha(x, q_segment_ids=seg, q_positions=pos, causal=True, q_prefix=prefix)
  mha.init_cache(b, t)
  outs = [mha(x[:, :p], q_segment_ids=seg[:, :p], q_positions=pos[:, :p], causal=True,
              q_prefix=None if prefix is None else prefix[:, :p], decode=True)]
  for i in range(p, t):
    outs.append(mha(x[:, i:i + 1], q_segment_ids=seg[:, :1], q_positions=pos[:, i:i + 1],
                    causal=True, decode=True))
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=TOL, rtol=TOL)
  assert int(mha.cache_index[...]) == t


def _check_decoder_generation(model, prompt, n, prefix_lm):
  tokens, logits = decoding.generate(model, prompt, max_new_tokens=n, eos_id=-1,
                                     prefix_lm=prefix_lm, return_logits=True)
  b, p = prompt.shape
  assert tokens.shape == (b, n) and logits.shape == (b, n, model.hp.vocab_size)
  full_seq = jnp.concatenate([prompt, tokens[:, :-1]], axis=1)
  prefix = (jnp.arange(full_seq.shape[1])[None] < p).astype(jnp.int32) if prefix_lm else None
  full = _forward(model, full_seq, None, None,
                  None if prefix is None else jnp.broadcast_to(prefix, full_seq.shape))
  np.testing.assert_allclose(logits, full[:, p - 1:], atol=TOL, rtol=TOL)
  np.testing.assert_array_equal(tokens, jnp.argmax(full[:, p - 1:], axis=-1))


def _generation_cases():
  """positions x causal/prefix x loop/scan; the default run keeps three (a compile each)."""
  fast = {('learned', False, True), ('learned', True, False), ('relative', False, False)}
  for positions in ('learned', 'rotary', 'relative'):
    for prefix_lm in (False, True):
      for scan in (False, True):
        marks = () if (positions, prefix_lm, scan) in fast else (pytest.mark.slow,)
        yield pytest.param(positions, prefix_lm, scan, marks=marks, id=(
            f'{positions}-{"prefix" if prefix_lm else "causal"}-{"scan" if scan else "loop"}'))


@pytest.mark.parametrize('positions,prefix_lm,scan_layers', _generation_cases())
def test_generate_equals_full_forward(positions, prefix_lm, scan_layers):
  model = models.build(_model_config(positions=positions, scan_layers=scan_layers,
                                     num_kv_heads=2, vocab_size=23), rngs=nnx.Rngs(3))
  prompt = jax.random.randint(jax.random.key(4), (2, 5), 4, 23)
  _check_decoder_generation(model, prompt, n=6, prefix_lm=prefix_lm)


@pytest.mark.slow
def test_generate_stops_at_eos_and_leaves_model_uncached():
  model = models.build(_model_config(vocab_size=23), rngs=nnx.Rngs(3))
  prompt = jax.random.randint(jax.random.key(4), (2, 5), 4, 23)
  free = decoding.generate(model, prompt, max_new_tokens=6, eos_id=-1)
  eos = int(free[0, 1])  # pretend a token row 0 generates is EOS
  stop = int(np.argmax(np.asarray(free[0]) == eos))  # where it first appears
  tokens = np.asarray(decoding.generate(model, prompt, max_new_tokens=6, eos_id=eos))
  np.testing.assert_array_equal(tokens[0, :stop + 1], free[0, :stop + 1])
  assert (tokens[0, stop + 1:] == 0).all()
  assert model.decoder.layers[0].self_attention.cached_key is None


@pytest.mark.parametrize('preset', ['t5', 'learned'])
def test_generate_seq2seq_equals_full_forward(preset):
  if preset == 't5':  # T5: relative position bias, RMSNorm, no biases, unscaled attention
    cfg = _model_config(family='encoder_decoder', positions='relative', norm='rmsnorm',
                        use_bias=False, scale_attention=False, scale_tied_logits=True,
                        num_decoder_layers=3, vocab_size=23)
  else:  # BART-like: learned positions, post-norm, embedding norm, logits bias
    cfg = _model_config(family='encoder_decoder', positions='learned', norm_position='post',
                        embed_norm=True, final_norm=False, lm_head_bias=True, vocab_size=23)
  model = models.build(cfg, rngs=nnx.Rngs(5))
  inputs = jax.random.randint(jax.random.key(6), (2, 7), 4, 23)
  in_seg = jnp.array([[1] * 7, [1] * 5 + [0] * 2], jnp.int32)
  n = 6
  tokens, logits = decoding.generate_seq2seq(model, inputs, in_seg, max_new_tokens=n, eos_id=-1,
                                             return_logits=True)
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), tokens[:, :-1]], axis=1)
  full = _forward(model, inputs, dec_in, in_seg)
  np.testing.assert_allclose(logits, full, atol=TOL, rtol=TOL)
  np.testing.assert_array_equal(tokens, jnp.argmax(full, axis=-1))


# ------------------------------------------------------------------- causality by gradients


def _dependence(fn, x_TD):
  """[T, T] matrix: max |d out[t] / d x[t']| over feature dims."""
  jac = jax.jit(jax.jacrev(fn))(x_TD)  # [T, D, T, D]
  return np.asarray(jnp.max(jnp.abs(jac), axis=(1, 3)))


def _expected(mode, t, p):
  causal = np.tril(np.ones((t, t), bool))
  if mode == 'bidirectional':
    return np.ones((t, t), bool)
  if mode == 'prefix':
    causal[:p, :p] = True
  return causal


@pytest.mark.parametrize('mode', MODES)
def test_mha_causality_by_gradients(mode):
  t, p = 6, 3
  mha = _mha(implementation='xla')
  seg = jnp.ones((1, t), jnp.int32)
  pos = jnp.arange(t)[None]
  prefix = (pos < p).astype(jnp.int32) if mode == 'prefix' else None
  fn = lambda x: mha(x[None], q_segment_ids=seg, q_positions=pos, causal=mode != 'bidirectional',
                     q_prefix=prefix)[0]
  dep = _dependence(fn, jax.random.normal(jax.random.key(7), (t, 32)))
  want = _expected(mode, t, p)
  assert (dep[~want] == 0).all(), dep
  assert (dep[want] > 1e-6).all(), dep


@pytest.mark.parametrize('mode', MODES)
def test_model_causality_by_gradients(mode):
  """A whole tiny stack over embeddings (DecoderOnly's decoder, EncoderOnly's encoder)."""
  t, p = 6, 3
  family = 'encoder' if mode == 'bidirectional' else 'decoder'
  model = models.build(_model_config(family=family, positions='rotary'), rngs=nnx.Rngs(0))
  stack = model.encoder if family == 'encoder' else model.decoder
  seg = jnp.ones((1, t), jnp.int32)
  pos = jnp.arange(t)[None]
  prefix = (pos < p).astype(jnp.int32) if mode == 'prefix' else None
  fn = lambda x: stack(x[None], segment_ids=seg, positions=pos, prefix=prefix)[0]
  dep = _dependence(fn, jax.random.normal(jax.random.key(8), (t, 32)))
  want = _expected(mode, t, p)
  assert (dep[~want] == 0).all(), dep
  assert (dep[want] > 1e-6).all(), dep
