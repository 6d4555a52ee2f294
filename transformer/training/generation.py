"""Generation metrics at eval: decode eval examples, score them, keep what was generated.

For an objective with `corpus_metrics` (seq2seq: BLEU, and ROUGE on summarisation-style data),
the first `log.decode.examples` examples of the eval split are decoded with the `log.decode`
strategy (transformer/models/decoding; a sampled example's noise follows its index in the eval
set, not its row in a batch), scored by `objective.score` on detokenized text against the
references, logged as `eval/bleu`, `eval/rouge1`, ... and written to
<run>/decodes/step_<N>.jsonl (one {"input", "prediction", "reference"} per line), so every
logged score can be recomputed from the file.

Multi-process runs: the parameters may be sharded across hosts, so every process joins every
decode. Each eval batch is gathered from all processes onto every process; all then decode the
same examples with the same program and agree on when to stop; only process 0 writes.
"""

import json
import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from transformer.errors import ConfigError
from transformer.models.decoding import Spec
from transformer.training import distributed


def enabled(run):
  """Whether this run decodes at eval: an objective with corpus metrics and examples > 0."""
  return bool(run.config.log.decode.examples and run.objective.corpus_metrics
              and run.config.train.eval_steps)


def metric_tags(run):
  """The eval/* tags of the generation metrics this run logs (the HParams metric columns)."""
  return [f'eval/{name}' for name in run.objective.corpus_metrics] if enabled(run) else []


def max_new_tokens(config):
  """`log.decode.max_new_tokens`, or the length of the target stream when it is 0."""
  return int(config.log.decode.max_new_tokens or config.data.targets_len or config.data.seq_len)


def _gathered(run, batch, last):
  """Every process's eval batch, concatenated, on every process (None when all are out).

  A process whose shard has ended joins with an all-padding copy of its last batch."""
  if jax.process_count() == 1:
    return batch
  have = [h for [h] in distributed.allgather_ints([batch is not None])]
  if not any(have):
    return None
  if batch is None and last is None:
    raise ConfigError(f'`data.eval_split={run.config.data.eval_split}`: process '
                      f'{jax.process_index()} has no eval batch to decode; use a larger eval '
                      'split or fewer processes')
  if batch is None:
    batch = {k: np.zeros_like(v) for k, v in last.items()}
  stacked = multihost_utils.process_allgather({k: np.asarray(v) for k, v in batch.items()})
  return {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in stacked.items()}


def decode_examples(run, params, pipeline):
  """Up to log.decode.examples samples (dicts of input, prediction, reference) of the eval
  split, decoded by the model holding `params`."""
  config, objective = run.config, run.objective
  cap, spec = int(config.log.decode.examples), Spec.from_mapping(config.log.decode)
  model = run.trainer.model(params)
  samples, last, it = [], None, pipeline.iterator(0)
  while len(samples) < cap:
    local = next(it, None)
    batch = _gathered(run, local, last)
    if batch is None:
      break
    last = local if local is not None else last
    samples += objective.predict(model, batch, run.tokenizer, max_new_tokens=max_new_tokens(config),
                                 spec=spec, limit=cap - len(samples), first_index=len(samples))
  return samples


def decode_eval(run, params, pipeline, step):
  """({'eval/<metric>': score}, samples) at `step`; ({}, []) for runs that do not decode."""
  if not enabled(run):
    return {}, []
  start = time.perf_counter()
  samples = decode_examples(run, params, pipeline)
  scores = {f'eval/{k}': v for k, v in run.objective.score(samples).items()}
  if distributed.is_primary():
    path = os.path.join(run.dir, 'decodes', f'step_{step}.jsonl')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      for s in samples:
        f.write(json.dumps({k: s[k] for k in ('input', 'prediction', 'reference')},
                           ensure_ascii=False) + '\n')
  distributed.print_once(f'decoded {len(samples)} eval examples ({config_strategy(run)}) in '
                         f'{time.perf_counter() - start:.1f}s')
  return scores, samples


def config_strategy(run):
  """'greedy', 'beam 4', 'sample t=0.8 p=0.9 k=0': the strategy as one short label."""
  d = run.config.log.decode
  if d.strategy == 'beam':
    return f'beam {d.beam_size}, alpha {d.alpha} ({d.length_norm})'
  if d.strategy == 'sample':
    return f'sample t={d.temperature} k={d.top_k} p={d.top_p}'
  return 'greedy'
