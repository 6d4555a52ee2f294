"""UL2's mixture of denoisers (objectives/ul2.py): the keyed piece contract, each denoiser's rate
and spans, the mode token first, the mixture's proportions, its config errors and a few dozen
training steps of a tiny encoder-decoder and decoder."""

import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from transformer import models
from transformer import objectives
from transformer import train
from transformer.data import packing
from transformer.data import special_tokens
from transformer.errors import ConfigError
from transformer.objectives import ul2

from tests.objectives.conftest import FakeTokenizer
from tests.objectives.test_span_corruption import SENTINELS, _reconstruct

MODE_IDS = {'R': 96, 'X': 97, 'S': 98}
TEXT = (39, 96)   # ordinary ids drawn for texts: below the mode tokens
PAPER = (('R', 3.0, 0.15), ('R', 8.0, 0.15), ('X', 3.0, 0.5), ('X', 8.0, 0.5),
         ('X', 64.0, 0.15), ('X', 64.0, 0.5), ('S', 0.0, 0.5))
FAMILIES = ('encoder_decoder', 'decoder')


class ModeTokenizer(FakeTokenizer):
  """The fake tokenizer with UL2's mode tokens (ids 96, 97, 98)."""
  mode_r_id, mode_x_id, mode_s_id = MODE_IDS['R'], MODE_IDS['X'], MODE_IDS['S']


def _objective(make_config, family, seq_len=96, targets_len=48, **data):
  config = make_config('ul2', family, seq_len=seq_len, targets_len=targets_len, **data)
  return objectives.get(config, ModeTokenizer())


def _parts(obj, piece):
  """(mode id, inputs with [eos], targets) of a piece in either family's layout."""
  if obj.family == 'decoder':
    stream, k = piece['targets'].tolist(), int(piece['targets_prefix'].sum())
    assert stream[k - 1] == ModeTokenizer.sep_id
    return stream[0], [*stream[1:k - 1], ModeTokenizer.eos_id], stream[k:]
  inputs = piece['inputs'].tolist()
  return inputs[0], inputs[1:], piece['targets'].tolist()


def _text(rng, n):
  return rng.integers(*TEXT, size=n).astype(np.int32)


def test_the_registry_holds_the_mode_tokens():
  pieces = {t.name: t.piece for t in special_tokens.TOKENS}
  assert (pieces['mode_r'], pieces['mode_x'], pieces['mode_s']) == ('[R]', '[X]', '[S]')
  assert ul2.UL2.tokens_needed('decoder')[0] == 'sep'
  assert set(ul2.MODES.values()) <= set(ul2.UL2.tokens_needed('encoder_decoder'))


@pytest.mark.parametrize('family', FAMILIES)
def test_piece_lengths_see_the_key_and_predict_every_piece_exactly(make_config, family):
  obj = _objective(make_config, family)
  rng = np.random.default_rng(0)
  modes, by_key = set(), set()
  for trial in range(400):
    key = (7, 0, trial, int(rng.integers(0, 1000)))
    n = int(rng.integers(1, 140))
    predicted = obj.piece_lengths(n, first=bool(trial % 2), last=bool(trial % 3), key=key)
    piece = obj.piece(_text(rng, n), np.random.default_rng(key), first=True, last=True)
    assert {s: len(piece[s]) for s in predicted} == predicted, (key, n)
    modes.add(_parts(obj, piece)[0])
    by_key.add(tuple(obj.piece_lengths(60, first=True, last=True, key=key).values()))
    previous = None
    for m in range(1, 80, 7):    # non-decreasing in n for a fixed key (the packer bisects)
      lengths = obj.piece_lengths(m, first=True, last=True, key=key)
      assert previous is None or all(lengths[s] >= previous[s] for s in lengths)
      previous = lengths
  assert modes == set(MODE_IDS.values())
  assert len(by_key) >= 4         # the key, not n alone, sets the lengths
  with pytest.raises(ValueError, match='key='):
    obj.piece_lengths(10, first=True, last=True)


def _one(denoiser):
  return dict(ul2_denoisers=(denoiser,), ul2_proportions=(1.0,))


@pytest.mark.parametrize('denoiser', PAPER[:-1], ids=lambda d: f'{d[0]}{d[1]:g}@{d[2]}')
def test_each_span_denoiser_has_its_rate_and_mean_span(make_config, denoiser):
  obj = _objective(make_config, 'encoder_decoder', **_one(denoiser))
  _, mean_span, rate = denoiser
  rng = np.random.default_rng(1)
  text_total = noise_total = spans_total = 0
  # lengths that give 6..30 spans, within the 32 sentinels
  for n in rng.integers(int(6 * mean_span / rate), int(30 * mean_span / rate), size=60):
    text = _text(rng, int(n))
    mode, inputs, targets = _parts(obj, obj.piece(text, rng, first=True, last=True))
    assert mode == MODE_IDS[denoiser[0]]
    assert _reconstruct(inputs, targets) == text.tolist()
    spans = sum(t in SENTINELS for t in targets)
    text_total, noise_total = text_total + n, noise_total + len(targets) - spans - 1
    spans_total += spans
  assert noise_total / text_total == pytest.approx(rate, abs=0.005)
  assert noise_total / spans_total == pytest.approx(mean_span, rel=0.08)


@pytest.mark.parametrize('family', FAMILIES)
def test_the_s_denoiser_continues_its_prefix_with_the_configured_mean_share(make_config, family):
  obj = _objective(make_config, family, **_one(('S', 0, 0.5)))
  rng = np.random.default_rng(2)
  shares = []
  for _ in range(400):
    text = _text(rng, int(rng.integers(20, 60)))
    mode, inputs, targets = _parts(obj, obj.piece(text, rng, first=True, last=True))
    assert mode == MODE_IDS['S'] and not set(inputs + targets) & set(SENTINELS)
    assert inputs[:-1] + targets[:-1] == text.tolist()     # one span: the continuation
    assert 1 <= len(targets) - 1 <= len(text) - 1
    shares.append((len(targets) - 1) / len(text))
  assert np.mean(shares) == pytest.approx(0.5, abs=0.03)
  assert min(shares) < 0.1 and max(shares) > 0.9           # a uniform split point


def test_the_mixture_follows_its_proportions(make_config):
  uniform = _objective(make_config, 'encoder_decoder')
  assert [(d.mode, d.mean_span, d.rate) for d in uniform.denoisers] == list(PAPER)
  rng = np.random.default_rng(3)
  counts = np.bincount([uniform.denoisers.index(uniform.draw(rng)[0]) for _ in range(7000)],
                       minlength=7)
  np.testing.assert_allclose(counts / 7000, 1 / 7, atol=0.015)
  skewed = _objective(make_config, 'decoder', ul2_denoisers=PAPER[:2] + PAPER[-1:],
                      ul2_proportions=(0.25, 0.25, 0.5))
  picks = [skewed.draw(rng)[0].mode for _ in range(4000)]
  assert picks.count('S') / 4000 == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize('family', FAMILIES)
def test_the_mode_token_leads_each_packed_example(make_config, family):
  obj = _objective(make_config, family)
  rng = np.random.default_rng(4)
  docs = [(i, 0, _text(rng, int(n))) for i, n in enumerate(rng.integers(5, 200, size=40))]
  key = lambda index, offset: (0, 0, index, offset)

  def make_piece(tokens, piece_key, *, first, last):
    return obj.piece(tokens, np.random.default_rng(piece_key), first=first, last=last)
  rows = [r for r, _ in packing.stream_rows(docs, obj, obj.stream_lengths, make_piece, key)]
  batch = packing.build(rows, obj.stream_lengths, len(rows))
  stream = 'targets' if family == 'decoder' else 'inputs'
  tokens, segs = batch[stream], batch[f'{stream}_segment_ids']
  firsts = [tokens[r][segs[r] == s][0] for r in range(len(rows))
            for s in range(1, segs[r].max() + 1)]
  assert set(firsts) == set(MODE_IDS.values())
  assert (np.isin(tokens, list(MODE_IDS.values())).sum()) == len(firsts)   # and nowhere else
  used, slots = packing.efficiency({k: v[:-1] for k, v in batch.items()})   # full rows
  full = np.stack([(batch[f'{s}_segment_ids'][:-1] > 0).mean(1) for s in obj.stream_lengths])
  assert full.max(0).min() >= 0.95 and used / slots > (0.97 if family == 'decoder' else 0.6)


@pytest.mark.parametrize('data, needle', [
    (dict(ul2_proportions=(0.5, 0.6)), '`data.ul2_proportions=(0.5, 0.6)`: give 7'),
    (dict(ul2_denoisers=PAPER[:2], ul2_proportions=(0.5, 0.6)), 'sum to 1.1, not 1'),
    (dict(ul2_denoisers=(('Q', 3, 0.15),)), "mode 'Q'"),
    (dict(ul2_denoisers=(('X', 3, 1.5),)), 'rate 1.5'),
    (dict(ul2_denoisers=(('S', 0, 0.8),)), '(0, 0.5]'),
    (dict(ul2_denoisers=(('R', 0, 0.15),)), 'mean span 0'),
    (dict(ul2_denoisers=(('R', 3),)), 'not (mode, mean span, rate)'),
    (dict(ul2_denoisers=()), 'at least one'),
])
def test_a_bad_mixture_is_one_line_naming_the_key(make_config, data, needle):
  with pytest.raises(ConfigError) as e:
    _objective(make_config, 'decoder', **data)
  message = str(e.value)
  assert message.startswith('`data.ul2_') and needle in message and '\n' not in message, message


def test_the_train_cli_refuses_a_bad_mixture_and_writes_nothing(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train.main(['--config', 'configs/t5.py:tiny', f'--workdir={tmp_path}',
                '--config.objective=ul2', '--config.data.ul2_proportions=(0.5,0.6)'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.startswith('error: `data.ul2_proportions=(0.5, 0.6)`'), err
  assert '\n' not in err and not os.listdir(tmp_path)


def test_a_tokenizer_without_the_mode_tokens_is_refused(make_config):
  with pytest.raises(ConfigError, match='mode_r and a mode_x and a mode_s'):
    objectives.get(make_config('ul2', 'encoder_decoder'), FakeTokenizer())


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_a_tiny_model_trains_with_ul2_for_thirty_steps(make_config, family):
  config = make_config('ul2', family, seq_len=48, targets_len=32)
  config.model.update(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_len=64)
  obj = objectives.get(config, ModeTokenizer())
  rng = np.random.default_rng(5)
  # documents with structure to learn: runs of a few repeated ids
  docs = [(i, 0, np.repeat(_text(rng, int(n)), 3)) for i, n in
          enumerate(rng.integers(4, 40, size=300))]
  key = lambda index, offset: (0, 0, index, offset)

  def make_piece(tokens, piece_key, *, first, last):
    return obj.piece(tokens, np.random.default_rng(piece_key), first=first, last=last)
  rows = [r for r, _ in packing.stream_rows(docs, obj, obj.stream_lengths, make_piece, key)]
  batches = [packing.build(rows[i:i + 8], obj.stream_lengths, 8) for i in range(0, 240, 8)]
  model = models.build(config.model, head='lm', rngs=nnx.Rngs(params=0, dropout=1))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, batch):
    def loss_fn(p):
      return obj.loss_and_metrics(nnx.merge(graphdef, p, rest), batch, deterministic=True)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  state, losses = opt.init(params), []
  for batch in batches:
    params, state, loss = step(params, state, batch)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
