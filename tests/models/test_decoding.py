"""Generation never reads past a learned position table: `decoding.generate` refuses a prompt +
max_new_tokens longer than model.max_len, and the trainer's text samples stay inside it."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.e2e.sharding_helper import TINY, FakeTokenizer
from transformer import config as config_lib
from transformer import models, objectives
from transformer.models import decoding
from transformer.errors import ConfigError


def _config(spec, **overrides):
  return config_lib.load(spec, {**TINY, 'model.max_len': '12', 'data.seq_len': '12',
                                'model.init_std': '0.5', **overrides})


def _model(config):
  return models.build(config.model, rngs=nnx.Rngs(0))


def _prompt(length, rows=2):
  return jnp.asarray(np.random.default_rng(0).integers(39, 128, (rows, length)), jnp.int32)


def test_generate_past_learned_positions_is_refused_up_front():
  model = _model(_config('configs/gpt2.py:tiny'))
  with pytest.raises(ConfigError) as e:   # the case: 8 + 8 > 12 gave 3 silent pads
    decoding.generate(model, _prompt(8), max_new_tokens=8, eos_id=-1)
  message = str(e.value)
  assert 'model.max_len=12' in message and 'max_new_tokens=8' in message and '4' in message
  assert '\n' not in message


def test_generate_up_to_the_end_of_the_table_is_fine():
  model = _model(_config('configs/gpt2.py:tiny'))
  tokens, logits = decoding.generate(model, _prompt(8), max_new_tokens=4, eos_id=-1,
                                     return_logits=True)
  assert tokens.shape == (2, 4) and np.isfinite(np.asarray(logits)).all()


def test_positions_without_a_table_have_no_limit():
  model = _model(_config('configs/gpt2.py:tiny', **{'model.positions': 'rotary'}))
  _, logits = decoding.generate(model, _prompt(8), max_new_tokens=8, eos_id=-1,
                                return_logits=True)
  assert np.isfinite(np.asarray(logits)).all()


class CountingTokenizer(FakeTokenizer):
  eos_id = 10 ** 6   # an id no model row has: never stop early, every requested token is made
                    # (-1 would mean "no eos", which objectives that end examples refuse)

  def decode(self, ids):
    return len(ids)


def _rows(tokens_BL):
  tokens_BL = np.asarray(tokens_BL, np.int32)
  return tokens_BL, np.ones_like(tokens_BL)


def test_lm_samples_stay_inside_the_position_table():
  config = _config('configs/gpt2.py:tiny')
  objective = objectives.get(config, CountingTokenizer())
  tokens, segs = _rows(_prompt(12))   # prompt: the first 6 tokens; room for 6 more
  samples = objective.predict(_model(config), {'targets': tokens, 'targets_segment_ids': segs},
                              max_new_tokens=32)
  assert [s['prediction'] for s in samples] == [6, 6]


def test_seq2seq_samples_stay_inside_the_position_table():
  config = _config('configs/bart.py:tiny', **{'objective': 'seq2seq', 'data.targets_len': '12'})
  objective = objectives.get(config, CountingTokenizer())
  inputs, segs = _rows(_prompt(12))
  batch = {'inputs': inputs, 'inputs_segment_ids': segs, 'targets': inputs,
           'targets_segment_ids': segs}
  samples = objective.predict(_model(config), batch, max_new_tokens=32)
  assert [s['prediction'] for s in samples] == [12, 12]


# ------------------------------------------------- one API: strategies, cache modes, limits

from configs import common  # noqa: E402  (below the learned-table tests, which use TINY)
from transformer.models.decoding import Spec  # noqa: E402

EOS = 5
VOCAB = 23
# Right-padded prompts / inputs of lengths 5, 3 and 1.
RAGGED = np.array([[11, 7, 19, 4, 9], [13, 21, 6, 0, 0], [8, 0, 0, 0, 0]], np.int32)
SEGS = (RAGGED > 0).astype(np.int32)


def _tiny(**overrides):
  base = dict(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=32,
              init_std=0.3)
  return models.build(common.model_config(**{**base, **overrides}), rngs=nnx.Rngs(7))


MODELS = {   # decoder: T5 bias, grouped KV heads, scanned layers (the cache is reordered in vmap)
    'decoder': lambda: _tiny(positions='relative', num_kv_heads=2, scan_layers=True),
    'decoder_rotary': lambda: _tiny(positions='rotary'),
    't5': lambda: _tiny(family='encoder_decoder', positions='relative', norm='rmsnorm',
                        use_bias=False, scale_attention=False, num_decoder_layers=3),
    'bart': lambda: _tiny(family='encoder_decoder', positions='learned', norm_position='post',
                          embed_norm=True, final_norm=False, lm_head_bias=True,
                          decoder_start_id=2),
}
_BUILT = {}


def _get(name):
  if name not in _BUILT:
    _BUILT[name] = MODELS[name]()
  return _BUILT[name]


SPECS = {'greedy': Spec(), 'sample': Spec('sample', temperature=0.9, top_k=12, top_p=0.9,
                                          seed=4, num_return=2),
         'beam': Spec('beam', beam_size=3, alpha=0.6, num_return=2)}


def _decode(model, spec, cache='full', eos_id=EOS, **kw):
  kw.setdefault('prefix_lm', model.hp.family == 'decoder')
  return decoding.decode(model, RAGGED, segment_ids=SEGS, max_new_tokens=6, eos_id=eos_id,
                         spec=spec, cache=cache, **kw)


def _same(a, b):
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.lengths, b.lengths)
  np.testing.assert_allclose(a.scores, b.scores, atol=1e-4, rtol=1e-4)


def _cases():
  fast = {('decoder', 'greedy'), ('decoder', 'sample'), ('decoder', 'beam'), ('t5', 'greedy'),
          ('t5', 'beam')}
  for name in MODELS:
    for strategy in SPECS:
      marks = () if (name, strategy) in fast else (pytest.mark.slow,)
      yield pytest.param(name, strategy, marks=marks, id=f'{name}-{strategy}')


@pytest.mark.parametrize('name,strategy', _cases())
def test_cached_decoding_equals_full_recompute(name, strategy):
  """The KV cache (and the cross-attention memory) change nothing: the same tokens, lengths and
  scores as re-running the whole model over everything so far at every step."""
  model, spec = _get(name), SPECS[strategy]
  cached = _decode(model, spec)
  _same(cached, _decode(model, spec, cache='none'))
  if model.hp.family == 'encoder_decoder' and strategy == 'beam':
    _same(cached, _decode(model, spec, cache='self'))
  r = spec.num_return
  assert cached.tokens.shape == (3, r, 6) and cached.scores.shape == cached.lengths.shape == (3, r)
  tokens, lengths = np.asarray(cached.tokens), np.asarray(cached.lengths)
  for b in range(3):   # a row ends at its EOS and stays 0 after it
    for k in range(r):
      n = lengths[b, k]
      assert (tokens[b, k, n:] == 0).all() and (n == 6 or tokens[b, k, n - 1] == EOS)
      assert EOS not in tokens[b, k, :n - 1].tolist()


@pytest.mark.parametrize('name', ['decoder', pytest.param('t5', marks=pytest.mark.slow)])
def test_greedy_equals_cold_sampling_top_k_1_and_beam_1(name):
  model = _get(name)
  eos = int(np.asarray(_decode(model, Spec(), eos_id=-1).tokens)[0, 0, 2])  # row 0's third token
  greedy = _decode(model, Spec(), eos_id=eos)
  assert (np.asarray(greedy.lengths) < 6).any()   # some row meets its EOS: per-row ends tested
  for spec in (Spec('sample', temperature=1e-4, seed=1), Spec('sample', top_k=1, seed=2),
               Spec('beam', beam_size=1, alpha=0.0)):
    other = _decode(model, spec, eos_id=eos)
    np.testing.assert_array_equal(other.tokens, greedy.tokens, err_msg=str(spec))
    np.testing.assert_array_equal(other.lengths, greedy.lengths)
  np.testing.assert_allclose(other.scores, greedy.scores, atol=1e-4)   # beam 1, no penalty


def test_sampling_is_seeded():
  model = _get('decoder')
  a, b = (_decode(model, Spec('sample', seed=3)) for _ in range(2))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert (np.asarray(_decode(model, Spec('sample', seed=4)).tokens) != np.asarray(a.tokens)).any()


def test_limits_are_one_line_errors_before_compiling():
  bart = _get('bart')   # learned positions, max_len 32
  cases = [
      (lambda: decoding.generate_seq2seq(bart, RAGGED, SEGS, max_new_tokens=33, eos_id=EOS),
       ('max_new_tokens=33', 'model.max_len=32')),
      (lambda: decoding.generate_seq2seq(bart, np.ones((1, 40), np.int32), max_new_tokens=4),
       ('40-token inputs', 'model.max_len=32')),
      (lambda: decoding.decode(_get('t5'), RAGGED, segment_ids=SEGS, max_new_tokens=9,
                               cache_len=8), ('cache_len=8', 'max_new_tokens=9')),
      (lambda: decoding.decode(_get('decoder'), RAGGED, segment_ids=SEGS[:, ::-1],
                               max_new_tokens=2), ('right-padded',)),
      (lambda: decoding.decode(_get('decoder'), RAGGED, max_new_tokens=0), ('at least 1',)),
  ]
  for call, fragments in cases:
    with pytest.raises(ConfigError) as e:
      call()
    assert all(f in str(e.value) for f in fragments), str(e.value)
    assert '\n' not in str(e.value)


def test_rows_stop_at_the_end_of_a_learned_table_when_asked():
  model = _model(_config('configs/gpt2.py:tiny'))   # max_len 12
  prompt = np.asarray(_prompt(8, rows=2))
  segs = np.ones_like(prompt)
  segs[1, 4:] = 0   # an 8- and a 4-token prompt: room for 4 and 8 new tokens
  with pytest.raises(ConfigError):
    decoding.decode(model, prompt, segment_ids=segs, max_new_tokens=8, eos_id=-1)
  out = decoding.decode(model, prompt, segment_ids=segs, max_new_tokens=8, eos_id=-1,
                        stop_at_table_end=True)
  np.testing.assert_array_equal(out.lengths, [[4], [8]])
  assert (np.asarray(out.tokens)[0, 0, 4:] == 0).all()


# ------------------------------------------- ids past the tokenizer; each input's own noise

PAST = VOCAB - 1   # a model row the tokenizer below (VOCAB - 3 ids) does not have


def _biased(family):
  """A model whose LM bias makes `PAST` the likeliest token everywhere (built once)."""
  if f'biased {family}' in _BUILT:
    return _BUILT[f'biased {family}']
  family_keys = {} if family == 'decoder' else dict(
      family='encoder_decoder', positions='relative', norm='rmsnorm', scale_attention=False)
  model = _BUILT[f'biased {family}'] = _tiny(lm_head_bias=True, **family_keys)
  model.lm_head.bias.value = model.lm_head.bias.value.at[PAST].set(20.0)
  return model


@pytest.mark.parametrize('family,strategy', [
    ('decoder', 'greedy'), ('decoder', 'sample'), ('decoder', 'beam'),
    ('encoder_decoder', 'greedy'), ('encoder_decoder', 'beam'),
    pytest.param('encoder_decoder', 'sample', marks=pytest.mark.slow)])
def test_decoding_for_a_tokenizer_never_emits_an_id_it_lacks(family, strategy):
  """The model has VOCAB rows, the tokenizer VOCAB - 3 ids: with vocab_limit the rows past it
  are never chosen, though the bias makes the last one the likeliest (and it is, without)."""
  model, spec = _biased(family), SPECS[strategy]
  free = np.asarray(_decode(model, spec).tokens)
  assert (free == PAST).any()   # the test has power: unmasked decoding emits it
  out = _decode(model, spec, vocab_limit=VOCAB - 3)
  tokens = np.asarray(out.tokens)
  assert tokens.max() < VOCAB - 3, tokens
  assert np.isfinite(np.asarray(out.scores)).all()
  if (family, strategy) == ('decoder', 'greedy'):   # the logits returned: those that chose
    _, logits = decoding.generate(model, RAGGED, segment_ids=SEGS, max_new_tokens=2, eos_id=-1,
                                  spec=spec, return_logits=True, vocab_limit=VOCAB - 3)
    assert np.isneginf(np.asarray(logits)[..., VOCAB - 3:]).all()


def test_a_vocab_limit_at_the_model_size_changes_nothing():
  model = _get('decoder')
  for spec in SPECS.values():
    _same(_decode(model, spec), _decode(model, spec, vocab_limit=VOCAB))


def test_a_sampled_input_draws_by_its_own_index_not_its_row():
  """The issue's case: one prompt in two chunks of 2 rows got the same 2 samples twice. Each
  input's noise follows its index (default: its row), so chunks with indices 0, 1 and 2, 3
  draw 4 different samples, and the same indices give the same samples in any batch."""
  model, spec = _get('decoder'), Spec('sample', temperature=2.0, seed=1)
  prompt = np.tile(RAGGED[:1], (4, 1))
  segs = np.tile(SEGS[:1], (4, 1))

  def tokens(rows, index=None):
    return np.asarray(decoding.decode(model, prompt[rows], segment_ids=segs[rows], spec=spec,
                                      max_new_tokens=6, eos_id=-1, index=index).tokens)[:, 0]
  whole = tokens(slice(0, 4))
  chunks = np.concatenate([tokens(slice(0, 2), [0, 1]), tokens(slice(2, 4), [2, 3])])
  np.testing.assert_array_equal(chunks, whole)
  assert len({tuple(t) for t in whole}) == 4, whole
  np.testing.assert_array_equal(tokens(slice(0, 1), [3]), whole[3:])
