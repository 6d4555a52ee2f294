"""Golden parity: Hugging Face PyTorch models (random weights) vs the same weights imported by
transformer.hf.from_pretrained, on random padded batches, float32, max abs logit error < 1e-4.

Run with -s to see the measured error per family.
"""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from transformer import hf  # pylint: disable=g-import-not-at-top

TOLERANCE = 1e-4


def _padded(rng, vocab, batch, length):
  """Random ids and a right-padded 0/1 mask: row 0 full length, the others shorter."""
  ids = rng.integers(4, vocab, (batch, length))
  lengths = np.concatenate([[length], rng.integers(2, length, batch - 1)])
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
  return ids, mask


def _save(model, path, fmt='safetensors'):
  model.eval()
  if fmt == 'safetensors':
    model.save_pretrained(path)
  else:  # pytorch_model.bin, as older checkpoints ship it
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / 'pytorch_model.bin')


def _max_error(name, ref, got, mask):
  real = mask.astype(bool)
  error = float(np.abs(ref[real] - got[real]).max())
  print(f'\n[hf parity] {name}: max abs logit error {error:.2e} '
        f'(logits up to {np.abs(ref[real]).max():.2f})')
  return error


def _j(x):
  return jnp.asarray(x, jnp.int32)


def _check_encoder(hf_model, tmp_path, *, batch, length, fmt='safetensors', name='bert',
                   **overrides):
  _save(hf_model, tmp_path, fmt)
  _, model = hf.from_pretrained(tmp_path, **overrides)
  vocab = hf_model.config.vocab_size
  rng = np.random.default_rng(0)
  ids, mask = _padded(rng, vocab, batch, length)
  types = rng.integers(0, hf_model.config.type_vocab_size, (batch, length)) * mask
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   token_type_ids=torch.tensor(types)).logits.numpy()
  got = np.asarray(model(_j(ids), segment_ids=_j(mask), token_types=_j(types)))
  assert got.shape == ref.shape
  assert _max_error(name, ref, got, mask) < TOLERANCE


def _check_decoder(hf_model, tmp_path, *, batch, length, fmt='safetensors', name='gpt2',
                   **overrides):
  _save(hf_model, tmp_path, fmt)
  _, model = hf.from_pretrained(tmp_path, **overrides)
  ids, mask = _padded(np.random.default_rng(1), hf_model.config.vocab_size, batch, length)
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  got = np.asarray(model(_j(ids), segment_ids=_j(mask)))
  assert got.shape == ref.shape
  assert _max_error(name, ref, got, mask) < TOLERANCE


def _check_seq2seq(hf_model, tmp_path, *, batch, length, targets_length, fmt='safetensors',
                   name='seq2seq', **overrides):
  _save(hf_model, tmp_path, fmt)
  _, model = hf.from_pretrained(tmp_path, **overrides)
  rng = np.random.default_rng(2)
  vocab = hf_model.config.vocab_size
  ids, mask = _padded(rng, vocab, batch, length)
  dec_ids, dec_mask = _padded(rng, vocab, batch, targets_length)
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   decoder_input_ids=torch.tensor(dec_ids),
                   decoder_attention_mask=torch.tensor(dec_mask)).logits.numpy()
  got = np.asarray(model(_j(ids), _j(dec_ids), inputs_segment_ids=_j(mask),
                         decoder_segment_ids=_j(dec_mask)))
  assert got.shape == ref.shape
  assert _max_error(name, ref, got, mask=dec_mask) < TOLERANCE


# --- model factories (small, odd head counts, vocab not a multiple of 8) -----------------------

def bert(vocab=997, d=30, heads=3, layers=2, ff=44, **kw):
  torch.manual_seed(0)
  return transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
      intermediate_size=ff, max_position_embeddings=64, type_vocab_size=2, **kw))


def gpt2(vocab=997, d=30, heads=3, layers=2, **kw):
  torch.manual_seed(0)
  return transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=vocab, n_embd=d, n_layer=layers, n_head=heads, n_positions=64,
      bos_token_id=1, eos_token_id=1, **kw))


def bart(vocab=997, d=30, heads=3, enc=2, dec=1, ff=44, **kw):
  torch.manual_seed(0)
  return transformers.BartForConditionalGeneration(transformers.BartConfig(
      vocab_size=vocab, d_model=d, encoder_layers=enc, decoder_layers=dec,
      encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ff,
      decoder_ffn_dim=ff, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
      eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, **kw))


def t5(vocab=997, d=30, heads=3, d_kv=8, layers=2, dec=None, ff=44, proj='relu', tied=True,
       **kw):
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=vocab, d_model=d, d_kv=d_kv, num_heads=heads, d_ff=ff, num_layers=layers,
      num_decoder_layers=dec, feed_forward_proj=proj, tie_word_embeddings=tied, **kw))
  if not tied:  # recent transformers ties T5's lm_head regardless; untie it as v1.1 checkpoints are
    model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab, d) * d ** -0.5)
  return model


# --- parity -------------------------------------------------------------------------------------

@pytest.mark.parametrize('kw,batch,length', [
    (dict(), 3, 11),
    (dict(vocab=101, d=40, heads=5, layers=1, hidden_act='gelu_new'), 2, 17),
])
def test_bert(tmp_path, kw, batch, length):
  _check_encoder(bert(**kw), tmp_path, batch=batch, length=length)


@pytest.mark.parametrize('kw,batch,length', [
    (dict(), 3, 11),
    (dict(vocab=101, d=40, heads=5, layers=1, n_inner=24), 2, 17),
])
def test_gpt2(tmp_path, kw, batch, length):
  _check_decoder(gpt2(**kw), tmp_path, batch=batch, length=length)


@pytest.mark.parametrize('kw,batch,length,targets_length', [
    (dict(), 3, 11, 6),
    (dict(vocab=101, d=40, heads=5, enc=1, dec=2, scale_embedding=True), 2, 17, 9),
])
def test_bart(tmp_path, kw, batch, length, targets_length):
  _check_seq2seq(bart(**kw), tmp_path, batch=batch, length=length,
                 targets_length=targets_length, name='bart')


T5_CASES = [
    (dict(), 3, 11, 6),
    # few buckets and a short max distance: the log-spaced buckets are exercised
    (dict(vocab=101, d=40, heads=5, d_kv=6, layers=1, dec=2, relative_attention_num_buckets=8,
          relative_attention_max_distance=12), 2, 23, 17),
]


@pytest.mark.parametrize('kw,batch,length,targets_length', T5_CASES)
def test_t5_v1_0(tmp_path, kw, batch, length, targets_length):
  _check_seq2seq(t5(**kw), tmp_path, batch=batch, length=length,
                 targets_length=targets_length, name='t5 v1.0 (relu, tied)')


@pytest.mark.parametrize('kw,batch,length,targets_length', T5_CASES)
def test_t5_v1_1(tmp_path, kw, batch, length, targets_length):
  model = t5(proj='gated-gelu', tied=False, **kw)
  _check_seq2seq(model, tmp_path, batch=batch, length=length, targets_length=targets_length,
                 name='t5 v1.1 (gated-gelu, untied)')
  _, ours = hf.from_pretrained(tmp_path)
  assert not ours.hp.tie_embeddings and ours.hp.activation == 'geglu'


def test_pytorch_model_bin(tmp_path):
  """pytorch_model.bin read without torch: a zip of pickled storages."""
  _check_seq2seq(bart(), tmp_path, batch=2, length=9, targets_length=5, fmt='bin',
                 name='bart from pytorch_model.bin')


def test_pytorch_model_bin_bert(tmp_path):
  _check_encoder(bert(layers=1), tmp_path, batch=2, length=9, fmt='bin',
                 name='bert from pytorch_model.bin')


def test_scan_layers(tmp_path):
  """The stacked (nnx.scan) layout gives the same logits."""
  _check_seq2seq(t5(proj='gated-gelu', tied=False, layers=3), tmp_path, batch=2, length=9,
                 targets_length=7, name='t5 v1.1 scan_layers', scan_layers=True)


def test_scan_layers_gpt2(tmp_path):
  _check_decoder(gpt2(layers=3), tmp_path, batch=2, length=9, name='gpt2 scan_layers',
                 scan_layers=True)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_bert_pooler_reaches_a_classification_fine_tune(tmp_path, scan_layers):
  """import-hf keeps bert.pooler.dense.*; init_from into a classification model with
  classifier_pooler loads it, so with the same classifier weights our logits equal
  BertForSequenceClassification's built from the same pretrained files."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from transformer import models  # pylint: disable=import-outside-toplevel
  from transformer.training import checkpoint  # pylint: disable=import-outside-toplevel
  from transformer import import_hf  # pylint: disable=import-outside-toplevel
  hf_dir, out = tmp_path / 'hf', tmp_path / 'ours'
  torch.manual_seed(0)
  transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=101, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
      intermediate_size=44, max_position_embeddings=64, type_vocab_size=2)).save_pretrained(hf_dir)
  reference = transformers.BertForSequenceClassification.from_pretrained(hf_dir, num_labels=3)
  reference.eval()
  args = ['--from', str(hf_dir), '--workdir', str(out), '--weights_only'] + (
      ['--scan_layers'] if scan_layers else [])
  assert import_hf.main(args) == 0

  config, _ = hf.from_pretrained(hf_dir, scan_layers=scan_layers)
  config.model.num_classes = 3
  assert config.model.classifier_pooler
  model = models.build(config.model, head='classification', rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  params, missing, _ = checkpoint.load_pretrained(out, nnx.to_pure_dict(nnx.state(model,
                                                                                  nnx.Param)))
  assert sorted(missing) == ['classifier/classifier/bias', 'classifier/classifier/kernel']
  params['classifier']['classifier'] = {
      'kernel': jnp.asarray(reference.classifier.weight.detach().numpy().T),
      'bias': jnp.asarray(reference.classifier.bias.detach().numpy())}
  pooler = reference.bert.pooler.dense
  np.testing.assert_array_equal(params['classifier']['pooler']['kernel'],
                                pooler.weight.detach().numpy().T)
  full = nnx.to_pure_dict(state)
  full.update(params)
  nnx.replace_by_pure_dict(state, full)
  model = nnx.merge(graphdef, state)

  ids, mask = _padded(np.random.default_rng(3), 101, 3, 13)
  with torch.no_grad():
    ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
  got = np.asarray(model(_j(ids), segment_ids=_j(mask)))
  assert got.shape == ref.shape == (3, 3)
  assert _max_error('bert pooler + classifier', ref, got, np.ones(3)) < TOLERANCE


class _Recorder:
  """Wraps our model: records the decoder inputs the objective feeds it."""

  def __init__(self, model):
    self.model, self.decoder_inputs = model, []

  def __call__(self, inputs, decoder_inputs, **kwargs):
    self.decoder_inputs.append(np.asarray(decoder_inputs))
    return self.model(inputs, decoder_inputs, **kwargs)


def _batch(objective, pairs, length, targets_length):
  """Pairs (source ids, target ids) through the objective's features, packed into one row each
  (pack=False) or all into row 0 (pack=True)."""
  rows = [objective.features({'inputs': np.asarray(s), 'targets': np.asarray(t)})
          for s, t in pairs]
  batch = {}
  for stream, width in (('inputs', length), ('targets', targets_length)):
    tokens = np.zeros((len(rows), width), np.int32)
    segs, positions = np.zeros_like(tokens), np.zeros_like(tokens)
    for r, row in enumerate(rows):
      n = len(row[stream])
      tokens[r, :n], segs[r, :n], positions[r, :n] = row[stream], 1, np.arange(n)
    batch.update({stream: tokens, f'{stream}_segment_ids': segs,
                  f'{stream}_positions': positions})
  return batch


@pytest.mark.parametrize('family, start', [('bart', 2), ('t5', 0)])
def test_imported_decoder_starts_from_the_hf_decoder_start_token(tmp_path, family, start):
  """Teacher forcing and generation start the decoder where Hugging Face does: BART from
  decoder_start_token_id=2 (</s>), T5 from 0; the seq2seq loss equals HF's loss with labels."""
  from transformer import objectives  # pylint: disable=import-outside-toplevel
  from transformer.models import decoding  # pylint: disable=import-outside-toplevel
  from tests.objectives.conftest import FakeTokenizer  # pylint: disable=import-outside-toplevel
  hf_model = bart() if family == 'bart' else t5(decoder_start_token_id=0)
  _save(hf_model, tmp_path)
  config, model = hf.from_pretrained(tmp_path)
  assert config.model.decoder_start_id == hf_model.config.decoder_start_token_id == start
  config.objective = 'seq2seq'
  objective = objectives.get(config, FakeTokenizer())
  rng = np.random.default_rng(4)
  pairs = [(rng.integers(4, 997, 9).tolist(), rng.integers(4, 997, n).tolist()) for n in (6, 4)]
  batch = _batch(objective, pairs, 10, 7)
  recorder = _Recorder(model)
  loss, _ = objective.loss_and_metrics(recorder, batch)

  labels = torch.tensor(batch['targets'][:1], dtype=torch.long)  # row 0 full: HF averages all
  if family == 'bart':
    from transformers.models.bart.modeling_bart import shift_tokens_right  # pylint: disable=g-import-not-at-top
    expected = shift_tokens_right(labels, hf_model.config.pad_token_id, start)
  else:
    expected = hf_model._shift_right(labels)  # pylint: disable=protected-access
  np.testing.assert_array_equal(recorder.decoder_inputs[0][:1], expected.numpy())
  short = batch['targets_segment_ids'][1] > 0
  np.testing.assert_array_equal(recorder.decoder_inputs[0][1][short],
                                [start, *batch['targets'][1][short][:-1]])
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(batch['inputs'][:1], dtype=torch.long), labels=labels)
  ours, _ = objective.loss_and_metrics(model, {k: v[:1] for k, v in batch.items()})
  np.testing.assert_allclose(float(ours), float(ref.loss), rtol=1e-5)
  assert np.isfinite(float(loss))

  ids, mask = _padded(np.random.default_rng(5), 997, 2, 9)
  _, logits = decoding.generate_seq2seq(model, _j(ids), _j(mask), max_new_tokens=1,
                                        return_logits=True)
  with torch.no_grad():
    first = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     decoder_input_ids=torch.full((2, 1), start)).logits[:, 0].numpy()
  assert _max_error(f'{family} first decoding step', first, np.asarray(logits[:, 0]),
                    np.ones(2)) < TOLERANCE
