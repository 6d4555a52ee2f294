"""Classification: layouts per family, example-level loss and accuracy, label checks."""

import jax.numpy as jnp
import numpy as np
import pytest

from transformer import objectives
from transformer.errors import ConfigError


def test_layouts(make_config, tokenizer):
  enc = objectives.get(make_config('classification', 'encoder', seq_len=6), tokenizer)
  dec = objectives.get(make_config('classification', 'decoder', seq_len=6), tokenizer)
  assert enc.head == dec.head == 'classification' and not enc.packable
  assert enc.example_fields == ('text', 'label') and enc.text_chunk_len is None
  f = enc.features({'text': np.arange(40, 50), 'label': 1})
  np.testing.assert_array_equal(f['inputs'], [6, 40, 41, 42, 43, 5])
  assert f['label'] == 1 and np.ndim(f['label']) == 0
  f = dec.features({'text': np.array([40, 41]), 'label': 0})
  np.testing.assert_array_equal(f['inputs'], [3, 40, 41, 6])


def test_label_out_of_range_names_num_classes(make_config, tokenizer):
  obj = objectives.get(make_config('classification', 'encoder'), tokenizer)
  with pytest.raises(ConfigError, match='`model.num_classes`'):
    obj.features({'text': np.array([40]), 'label': 2})


def test_metrics_over_examples_ignore_padding_rows(make_config, tokenizer):
  cfg = make_config('classification', 'encoder', seq_len=4)
  cfg.model.num_classes = 3
  obj = objectives.get(cfg, tokenizer)
  logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 3.0, 0.0], [9.0, 0.0, 0.0]])
  batch = {'inputs': np.array([[6, 40, 5, 0], [6, 41, 5, 0], [6, 42, 43, 5], [0, 0, 0, 0]]),
           'inputs_segment_ids': np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1],
                                           [0, 0, 0, 0]]),
           'inputs_positions': np.array([[0, 1, 2, 0], [0, 1, 2, 0], [0, 1, 2, 3], [0] * 4]),
           'label': np.array([0, 1, 1, 2])}

  def model(tokens, segs, positions, *, deterministic):
    del tokens, segs, positions, deterministic
    return jnp.asarray(logits)

  loss, metrics = obj.loss_and_metrics(model, batch, deterministic=True)
  log_z = np.log(np.exp(logits[:3]).sum(-1))
  expected = np.mean(log_z - logits[np.arange(3), batch['label'][:3]])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert [float(x) for x in metrics['accuracy']] == [2.0, 3.0]  # rows 0 and 2 right, 1 wrong
  assert float(metrics['loss'][1]) == 3.0
  assert obj.eval_metrics(model, batch)['accuracy'] == metrics['accuracy']
  samples = obj.predict(model, batch, tokenizer)
  assert samples == [dict(input='t40', prediction='0', reference='0'),
                     dict(input='t41', prediction='2', reference='1')]
