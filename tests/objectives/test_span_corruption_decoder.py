"""Span corruption on a decoder-only model (T5 Table 2's LM / prefix LM rows with denoising):
one stream [bos] inputs [sep] targets, loss on the targets only, prefix or causal attention over
the inputs, stream packing, and a few real training steps."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from transformer import models
from transformer import objectives
from transformer.data import packing
from transformer.errors import ConfigError

from tests.objectives.test_span_corruption import SENTINELS, _reconstruct

BOS, SEP, EOS = 3, 5, 1


def _objective(make_config, tokenizer, attention='prefix', seq_len=48):
  config = make_config('span_corruption', 'decoder', seq_len=seq_len,
                       denoise_attention=attention)
  return objectives.get(config, tokenizer)


def _split(stream, prefix):
  """(inputs with their [eos] back, targets) of one decoder stream."""
  k = int(np.sum(prefix))
  assert stream[0] == BOS and stream[k - 1] == SEP and stream[-1] == EOS
  return [*stream[1:k - 1], EOS], list(stream[k:])


def test_one_stream_with_the_inputs_as_prefix_rebuilds_the_text(make_config, tokenizer):
  obj = _objective(make_config, tokenizer)
  assert obj.stream_lengths == {'targets': 48}
  rng = np.random.default_rng(0)
  for n in (2, 7, 20, obj.text_chunk_len, 200):
    text = rng.integers(39, 100, size=n).astype(np.int32)
    f = obj.features({'text': text}, rng)
    stream, prefix = f['targets'].tolist(), f['targets_prefix'].tolist()
    assert len(stream) == len(prefix) <= 48
    k = sum(prefix)
    assert prefix == [1] * k + [0] * (len(stream) - k)   # [bos] .. [sep] is the prefix
    inputs, targets = _split(stream, prefix)
    assert targets[0] in SENTINELS
    assert _reconstruct(inputs, targets) == text[:obj.text_chunk_len].tolist()
  # the longest chunk is the longest whose stream fits
  lengths = [obj.piece_lengths(n, first=True, last=True)['targets'] for n in range(1, 60)]
  assert lengths[obj.text_chunk_len - 1] <= 48 < lengths[obj.text_chunk_len]


@pytest.mark.parametrize('attention', ['prefix', 'causal'])
def test_loss_weights_exactly_the_target_tokens(make_config, tokenizer, table, table_model,
                                                packer, attention):
  obj = _objective(make_config, tokenizer, attention)
  rng = np.random.default_rng(1)
  feats = [obj.features({'text': rng.integers(39, 100, size=n)}, rng) for n in (12, 9, 30)]
  batch = packer(feats, 48, 'targets')
  loss, metrics = obj.loss_and_metrics(table_model, batch, deterministic=True)
  tokens, segs, prefix = batch['targets'], batch['targets_segment_ids'], batch['targets_prefix']
  scored = (segs[:, :-1] > 0) & (segs[:, 1:] == segs[:, :-1]) & (prefix[:, 1:] == 0)
  logits = table[tokens[:, :-1][scored]].astype(np.float64)
  labels = tokens[:, 1:][scored]
  expected = np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(labels)), labels]
  np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)
  # every target token (sentinels, noise and the [eos]) is scored, nothing of the inputs
  assert float(metrics['loss'][1]) == sum(len(f['targets']) - f['targets_prefix'].sum()
                                          for f in feats)
  kwargs = table_model.calls[-1][1]
  if attention == 'prefix':
    np.testing.assert_array_equal(kwargs['prefix'], prefix)
  else:
    assert 'prefix' not in kwargs


def test_bad_attention_is_refused_naming_the_key(make_config, tokenizer):
  with pytest.raises(ConfigError, match=r'`data.denoise_attention=.bidirectional.`'):
    _objective(make_config, tokenizer, 'bidirectional')
  with pytest.raises(ConfigError, match='`data.seq_len`'):
    _objective(make_config, tokenizer, seq_len=5)


def test_stream_packing_keeps_the_piece_lengths_contract(make_config, tokenizer):
  obj = _objective(make_config, tokenizer)
  rng = np.random.default_rng(2)
  docs = [(i, 0, rng.integers(39, 100, size=n).astype(np.int32))
          for i, n in enumerate((100, 7, 60, 3))]

  def make_piece(tokens, key, first, last):
    del key
    return obj.piece(tokens, rng, first=first, last=last)
  rows = [row for row, _ in packing.stream_rows(docs, obj, obj.stream_lengths, make_piece)]
  assert len(rows) > 2
  for row in rows:
    assert sum(len(p['targets']) for p in row) <= 48
    for p in row:
      _split(p['targets'].tolist(), p['targets_prefix'])


def _tiny(make_config, tokenizer, attention):
  config = make_config('span_corruption', 'decoder', seq_len=48, denoise_attention=attention)
  config.model.update(num_layers=2, d_model=32, num_heads=2, d_ff=64, max_len=64)
  return config, objectives.get(config, tokenizer)


class _Recorder:
  """Calls the model and keeps its logits."""

  def __init__(self, model):
    self.model, self.logits = model, None

  def __call__(self, *args, **kwargs):
    self.logits = np.asarray(self.model(*args, **kwargs))
    return self.logits


def test_prefix_and_causal_attention_differ_on_the_input_part_and_train(make_config, tokenizer,
                                                                        packer):
  config, prefix_obj = _tiny(make_config, tokenizer, 'prefix')
  _, causal_obj = _tiny(make_config, tokenizer, 'causal')
  model = models.build(config.model, head='lm', rngs=nnx.Rngs(params=0, dropout=1))
  rng = np.random.default_rng(3)
  feats = [prefix_obj.features({'text': rng.integers(39, 100, size=n)}, rng) for n in (20, 16)]
  batch = packer(feats, 48, 'targets')
  logits = {}
  for name, obj in (('prefix', prefix_obj), ('causal', causal_obj)):
    recorder = _Recorder(model)
    obj.loss_and_metrics(recorder, batch, deterministic=True)
    logits[name] = recorder.logits
  inputs = batch['targets_prefix'] == 1
  gap = np.abs(logits['prefix'] - logits['causal']).max(-1)
  assert (gap[inputs] > 1e-4).mean() > 0.5   # the input part reads differently
  # a few training steps of each form run and lower the loss on this batch
  for obj in (prefix_obj, causal_obj):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, state, obj=obj):
      def loss_fn(p):
        return obj.loss_and_metrics(nnx.merge(graphdef, p, rest), batch, deterministic=True)[0]
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss
    state, losses = opt.init(params), []
    for _ in range(4):
      params, state, loss = step(params, state)
      losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
