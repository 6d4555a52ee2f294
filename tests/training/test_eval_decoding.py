"""Eval decoding (transformer/training/generation.py): a sampled eval example draws its own noise.

`log.decode.strategy=sample` decodes the eval set batch by batch; each example's noise follows
its index in the eval set, so equal examples in two batches (at the same row) draw different
samples instead of the same one twice.
"""

import types

import numpy as np
from flax import nnx

from tests.e2e.sharding_helper import TINY, FakeTokenizer
from transformer import config as config_lib
from transformer import models, objectives
from transformer.training import generation


def _run(examples):
  config = config_lib.load('configs/transformer.py:tiny', {
      **TINY, 'objective': 'seq2seq', 'model.init_std': '0.5', 'log.decode.examples':
      str(examples), 'log.decode.strategy': 'sample', 'log.decode.temperature': '2.0',
      'log.decode.max_new_tokens': '6', 'mesh.shape': '(1, 1, 1)'})
  model = models.build(config.model, rngs=nnx.Rngs(0))
  tokenizer = FakeTokenizer()
  return types.SimpleNamespace(config=config, tokenizer=tokenizer,
                               objective=objectives.get(config, tokenizer),
                               trainer=types.SimpleNamespace(model=lambda params: model))


def test_sampled_eval_examples_draw_by_their_index_in_the_eval_set():
  """Two eval batches of the same 2 examples: the issue's case gave 2 samples, each twice."""
  tokens = np.zeros((2, 8), np.int32)
  tokens[:, :4] = [40, 41, 42, 1]
  batch = {'inputs': tokens, 'inputs_segment_ids': (tokens > 0).astype(np.int32),
           'targets': tokens, 'targets_segment_ids': (tokens > 0).astype(np.int32)}
  pipeline = types.SimpleNamespace(iterator=lambda _: iter([batch, batch]))
  samples = generation.decode_examples(_run(4), None, pipeline)
  predictions = [s['prediction'] for s in samples]
  assert len(predictions) == 4 and len(set(predictions)) == 4, predictions
