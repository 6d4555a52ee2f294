"""GLUE in the classification objective: sentence pairs per family with token types, the pair
cut, regression (one unit, squared error), and corpus-level metrics equal to scikit-learn's and
scipy's, gathered over the whole eval set rather than averaged per batch."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from transformer import objectives
from transformer.data import fields
from transformer.objectives import classification, metrics
from transformer.training import evaluation


def _pair_config(make_config, family, **model):
  c = make_config('classification', family, seq_len=10)
  c.data.text_pair_key = 'sentence2'
  for key, value in model.items():
    c.model[key] = value
  return c


def test_encoder_pair_with_token_types(make_config, tokenizer):
  obj = objectives.get(_pair_config(make_config, 'encoder', type_vocab_size=2), tokenizer)
  assert obj.fields == {'text': fields.TEXT, 'text_pair': fields.TEXT, 'label': fields.LABEL}
  f = obj.features({'text': np.array([40, 41]), 'text_pair': np.array([50, 51, 52]), 'label': 1})
  np.testing.assert_array_equal(f['inputs'], [6, 40, 41, 5, 50, 51, 52, 5])   # cls a sep b sep
  np.testing.assert_array_equal(f['inputs_token_types'], [0, 0, 0, 0, 1, 1, 1, 1])


def test_decoder_pair_has_a_separator_and_no_token_types(make_config, tokenizer):
  obj = objectives.get(_pair_config(make_config, 'decoder'), tokenizer)
  f = obj.features({'text': np.array([40]), 'text_pair': np.array([50, 51]), 'label': 0})
  np.testing.assert_array_equal(f['inputs'], [3, 40, 5, 50, 51, 6])          # bos a sep b cls
  assert 'inputs_token_types' not in f


@pytest.mark.parametrize('n1,n2,room,kept', [
    (3, 4, 8, (3, 4)), (10, 3, 7, (4, 3)), (3, 10, 7, (3, 4)), (10, 10, 7, (3, 4)),
    (11, 10, 7, (4, 3)), (5, 4, 5, (3, 2)), (3, 10, 5, (2, 3))])
def test_longest_first_cut(n1, n2, room, kept):
  assert classification.longest_first(n1, n2, room) == kept


def test_glue_pair_sources_declare_the_pair(make_config, tokenizer):
  c = make_config('classification', 'encoder', source='glue/mnli')
  c.model.num_classes = 3
  assert 'text_pair' in objectives.declared_fields('classification', c)
  c.data.source = 'glue/sst2'
  assert 'text_pair' not in objectives.declared_fields('classification', c)


def _fake_model(logits):
  def model(tokens, segs, positions, *, deterministic):
    del tokens, segs, positions, deterministic
    return jnp.asarray(logits, jnp.float32)
  return model


def _batch(labels, real):
  n = len(labels)
  segs = np.zeros((n, 4), np.int32)
  segs[:real, :3] = 1
  return {'inputs': np.where(segs > 0, 40, 0), 'inputs_segment_ids': segs,
          'inputs_positions': np.zeros((n, 4), np.int32), 'label': np.asarray(labels)}


def test_regression_is_one_unit_squared_error(make_config, tokenizer):
  c = make_config('classification', 'encoder', seq_len=6)
  c.model.num_classes = 1
  obj = objectives.get(c, tokenizer)
  assert obj.fields['label'] is fields.SCORE and obj.gathered_metrics == ('pearson', 'spearman')
  assert obj.features({'text': np.array([40]), 'label': 3.8})['label'].dtype == np.float32
  batch = _batch(np.array([1.0, 2.0, 4.0, 9.0], np.float32), real=3)
  loss, out = obj.loss_and_metrics(_fake_model([[1.5], [2.0], [3.0], [0.0]]), batch)
  np.testing.assert_allclose(loss, (0.25 + 0 + 1) / 3, rtol=1e-6)   # the padding row weighs 0
  assert 'accuracy' not in out and float(out['loss'][1]) == 3


def test_metrics_equal_sklearn_and_scipy():
  rng = np.random.default_rng(0)
  y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
  got = metrics.classification_scores(('accuracy', 'f1', 'mcc'), p, y)
  assert got == pytest.approx({'accuracy': skm.accuracy_score(y, p), 'f1': skm.f1_score(y, p),
                               'mcc': skm.matthews_corrcoef(y, p)}, abs=1e-12)
  a, b = rng.normal(size=40), rng.normal(size=40)
  got = metrics.classification_scores(('pearson', 'spearman'), a, b)
  assert got == pytest.approx({'pearson': stats.pearsonr(a, b)[0],
                               'spearman': stats.spearmanr(a, b)[0]}, abs=1e-12)
  one = metrics.classification_scores(('pearson', 'mcc'), np.array([1.0]), np.array([1.0]))
  assert np.isnan(one['pearson']) and one['mcc'] == 0.0   # a 1-example dev set: no crash


class _Pipeline:
  def __init__(self, batches):
    self.batches = batches

  def iterator(self, position):
    del position
    return iter(self.batches)


def test_t5_text_to_text_scores_decoded_labels(make_config, tokenizer):
  c = make_config('seq2seq', 'encoder_decoder')
  c.data.text_to_text = 'mrpc'
  obj = objectives.get(c, tokenizer)
  assert obj.corpus_metrics == ('f1', 'accuracy')
  pairs = [('equivalent', 'equivalent'), ('not_equivalent', 'equivalent'),
           ('no idea', 'not_equivalent'), ('equivalent', 'not_equivalent')]
  scores = obj.score([dict(prediction=p, reference=r) for p, r in pairs])
  assert scores == pytest.approx({'f1': 0.5, 'accuracy': 0.25})   # 'no idea' is wrong, not 0


def test_eval_scores_the_whole_set_not_a_mean_of_batches(make_config, tokenizer, monkeypatch):
  """Two batches of 4 (the last row of the second is padding): F1 and Matthews over all seven
  examples differ from the mean of the two batches' values; the eval reports the former."""
  obj = objectives.get(make_config('classification', 'encoder', seq_len=4), tokenizer)
  labels = [np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1])]
  guesses = [np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0])]
  batches = [_batch(y, real) for y, real in zip(labels, (4, 3))]
  logits = {id(b): np.eye(2)[g] * 5 for b, g in zip(batches, guesses)}
  whole_y, whole_p = np.concatenate([labels[0], labels[1][:3]]), np.concatenate(
      [guesses[0], guesses[1][:3]])
  per_batch = np.mean([skm.f1_score(labels[0], guesses[0]), skm.f1_score(labels[1][:3],
                                                                         guesses[1][:3])])
  assert abs(per_batch - skm.f1_score(whole_y, whole_p)) > 0.05   # the crafted case differs

  monkeypatch.setattr(evaluation.sharding, 'global_batch', lambda b, *a: b)
  run = type('Run', (), dict(objective=obj, mesh=None, config=make_config('classification',
                                                                          'encoder')))()
  run.config.train.eval_steps = 5
  run.trainer = type('T', (), dict(input_sharding=None))()
  eval_fn = lambda params, b: obj.eval_metrics(_fake_model(logits[id(b)]), b)
  scores, _ = evaluation.evaluate(run, None, _Pipeline(batches), eval_fn)
  assert scores['f1'] == pytest.approx(skm.f1_score(whole_y, whole_p))
  assert scores['mcc'] == pytest.approx(skm.matthews_corrcoef(whole_y, whole_p))
  assert scores['accuracy'] == pytest.approx(np.mean(whole_y == whole_p))
