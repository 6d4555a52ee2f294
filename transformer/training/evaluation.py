"""Eval during and after training: metrics over the eval split, text samples (an image model:
its misclassified images), attention images.

Metrics are (sum, count) pairs added over batches and divided once (`average`), so every eval
batch weighs by its tokens, and multi-process runs agree on the number of batches. Corpus-level
scores (F1, Matthews and correlations of classification runs) are no such averages: the
objective's per-example arrays (`objective.gathered`) are gathered from every batch (and
process) and scored once over the whole eval set (`objective.corpus_scores`).
"""

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from transformer.errors import ConfigError
from transformer.monitoring import attention, image_attention
from transformer.training import distributed, generation, optim, scoring, sharding


def average(sums):
  """{name: (sum, count)} -> {name: mean}, plus perplexity = exp(loss) where there is a loss."""
  out = {k: float(s) / max(float(c), 1e-9) for k, (s, c) in sums.items()}
  if 'loss' in out:
    out['perplexity'] = float(np.exp(min(out['loss'], 50.0)))
  return out


def accumulate(sums, metrics):
  """Add one step's {name: (sum, count)} into `sums` (host floats)."""
  for k, (s, c) in metrics.items():
    s0, c0 = sums.get(k, (0.0, 0.0))
    sums[k] = (s0 + float(s), c0 + float(c))
  return sums


def evaluate(run, params, pipeline, eval_fn):
  """(mean metrics over up to train.eval_steps eval batches, this process's last batch).

  Each eval step is collective, so all processes run as many as the longest shard has: a shard
  that runs out first feeds all-padding batches, which weigh nothing.
  """
  config = run.config
  names = tuple(getattr(run.objective, 'gathered', ()))
  sums, last, it, gathered = {}, None, pipeline.iterator(0), {name: [] for name in names}
  for _ in range(config.train.eval_steps):
    batch = next(it, None)
    have = [h for [h] in distributed.allgather_ints([batch is not None])]
    if not any(have):
      break
    if last is None and not all(have):
      raise ConfigError(f'`data.eval_split={config.data.eval_split}`: process {have.index(0)} '
                        'has no eval batch; use a larger eval split or fewer processes')
    if batch is None:   # this shard is done and another is not: a batch that weighs nothing
      batch = {k: np.zeros_like(v) for k, v in last.items()}
    else:
      last = batch
    metrics = dict(eval_fn(params, sharding.global_batch(batch, run.mesh,
                                                         run.trainer.input_sharding)))
    for name in names:
      gathered[name].append(_fetch_all(metrics.pop(name)))
    sums = accumulate(sums, jax.device_get(metrics))
  out = average(sums)
  if names and gathered[names[0]]:
    out.update(run.objective.corpus_scores({k: np.concatenate(v) for k, v in gathered.items()}))
  return out, last


def _fetch_all(array):
  """A [B] array of the global batch on this host (gathered from every process)."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(array))
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


@dataclasses.dataclass
class EvalResult:
  """One eval: its scalars ('eval/...'; a hook may add its own) and what the pictures need."""
  scalars: dict
  state: Any               # the train state evaluated
  batch: Any               # this process's last eval batch (attention pictures, samples)
  samples: list            # decoded eval examples (generation metrics), the first ones first


def evaluate_at(run, state, pipeline, eval_fn, step):
  """The eval at `step` (every process joins): metrics over the eval split and, for objectives
  that generate, the decoding metrics (eval/bleu, ...) with the decoded examples; at the last
  step the score file's test/* metrics (`scoring`, when log.score.file is set). Everything is
  evaluated at `optim.eval_params(state)` (schedule-free: the averaged iterate), which is also
  the state the result carries for its pictures and samples."""
  params = optim.eval_params(state)
  metrics, batch = evaluate(run, params, pipeline, eval_fn)
  scalars = {f'eval/{k}': v for k, v in metrics.items()}
  decoded, decoded_samples = generation.decode_eval(run, params, pipeline, step)
  scalars.update(decoded)
  if scoring.enabled(run.config, step):
    scalars.update(scoring.score_at(run, params, step))
  return EvalResult(scalars, {**state, 'params': params}, batch,
                    decoded_samples[:run.config.log.samples])


def write_pictures(run, result, writer, step):
  """Text samples and the attention diagnostics and pictures of the first eval rows
  (monitoring/attention.py) of one eval `result`."""
  state, batch, decoded_samples = result.state, result.batch, result.samples
  # Sampling runs eagerly on process 0's rows; with several processes the sharded parameters
  # span hosts and every process would have to join, so samples and attention maps are skipped.
  if jax.process_count() == 1 and run.config.log.samples:
    _samples(run, state, batch, writer, step, decoded_samples or None)
  elif decoded_samples:
    writer.text(step, 'samples', _markdown(decoded_samples))
  if jax.process_count() == 1 and (run.config.log.attention_images or
                                   run.config.log.attention_stats):
    attention.write_eval(writer, step, run.trainer.model(state['params']), run.trainer.objective,
                         batch, run.tokenizer, run.config)


def _markdown(samples):
  return '\n\n'.join(f'**input:** {s["input"]}\n\n**prediction:** {s["prediction"]}\n\n'
                     f'**reference:** {s["reference"]}' for s in samples)


def _samples(run, state, batch, writer, step, samples=None):
  config, trainer = run.config, run.trainer
  if hasattr(trainer.objective, 'classify'):   # images: the misclassified ones, as a picture
    return _mistakes(run, state, batch, writer, step)
  rows = {k: v[:config.log.samples] for k, v in batch.items()}
  if samples is None:
    samples = trainer.objective.predict(trainer.model(state['params']), rows, run.tokenizer,
                                        max_new_tokens=config.log.sample_length)
  writer.text(step, 'samples', _markdown(samples))


def _mistakes(run, state, batch, writer, step):
  """Up to `log.samples` misclassified images of the eval batch with their predicted and true
  labels (`eval_images/misclassified`), or a line saying there were none."""
  predicted, true, weight = run.trainer.objective.classify(run.trainer.model(state['params']),
                                                          batch)
  wrong = np.flatnonzero((predicted != true) & (weight > 0))[:run.config.log.samples]
  if not len(wrong):
    writer.text(step, 'samples', f'every one of the {int(np.sum(weight > 0))} images of the '
                'last eval batch is classified right')
    return
  images = [np.asarray(batch['image'][i]) for i in wrong]
  writer.image(step, 'eval_images/misclassified', image_attention.render_mistakes(
      images, predicted[wrong].tolist(), true[wrong].tolist()))
