"""Score a fixed list of examples one by one: the test set of a comparison, read per example.

`log.score.file` names a jsonl file, one example per line with a unique "id" and the fields the
run's objective reads (under the run's `data.<role>_key` names, as the `jsonl:` source reads
them). At the last step of training the run scores every example, each in a row of its own (no
packing, so no example's score depends on its neighbours or on the stream layout), with the
objective's own `features` (its truncation: the same for every family when the lengths match,
see objectives/seq2seq.py) and writes <run>/scores/step_<N>.jsonl, one line per example:

  id, loss, tokens      the summed cross-entropy (nats) of the example's scored tokens and their
                        number (seq2seq: the target tokens and its EOS, for either family)
  bytes                 UTF-8 bytes of the scored text (language-model objectives: bits per
                        byte = loss / ln 2 / bytes, comparable across tokenizers)
  correct               1/0: the classification head's argmax is the label (objective
                        classification), or the best-ranked choice is the target (below)
  choice                with choices: the choice whose target scored the lowest summed loss
                        (rank classification: every label string scored as a target, T5's
                        text-to-text classification without the free-form decoding)
  prediction, reference greedy decoding of an objective that generates (log.decode's strategy)

`log.score.choices` (a JSON file with a list of strings, or a "choices" list in a record) turns
on ranking. The run logs the summary as test/<metric> (loss per scored token, accuracy %,
exact_match %, bleu): `summary`. Every family scored from one file sees the same example ids,
and (with matched truncation) the same scored tokens.
"""

import functools
import glob
import json
import math
import os
import re

import jax
import numpy as np

from transformer.data import packing
from transformer.data.pipeline import TEXT_ROLES
from transformer.errors import ConfigError
from transformer.files import atomic_write
from transformer.models.decoding import Spec
from transformer.training import distributed, generation

ROLES = ('text', 'inputs', 'targets', 'label')


def settings(config):
  """log.score of a config ({} for a run saved before the key existed)."""
  return config.log.get('score') or {}


def enabled(config, step=None):
  """Whether the run scores its score file (at `step`: only at the last step)."""
  return bool(settings(config).get('file')) and (step is None or step == config.train.steps)


def _choices(path):
  if not path:
    return None
  try:
    with open(path, encoding='utf-8') as f:
      choices = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'`log.score.choices={path}`: cannot read a JSON list of strings '
                      f'({type(e).__name__}); give such a file or leave it empty') from None
  if not (isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)):
    raise ConfigError(f'`log.score.choices={path}`: must hold a non-empty JSON list of strings')
  return choices


def read_examples(config):
  """The score file's records, each as (id, {role: raw value}, choices or None)."""
  path = settings(config)['file']
  keys = {role: config.data.get(f'{role}_key') or role for role in ROLES}
  shared = _choices(settings(config).get('choices', ''))
  out, seen = [], set()
  try:
    with open(path, encoding='utf-8') as f:
      lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
  except OSError as e:
    raise ConfigError(f'`log.score.file={path}`: cannot read it ({e.strerror}); give a jsonl '
                      'file of examples with an "id" each') from None
  for lineno, line in lines:
    record = json.loads(line)
    if 'id' not in record or str(record['id']) in seen:
      raise ConfigError(f'`log.score.file={path}`: line {lineno} has no "id" or repeats one; '
                        'give every example a unique id')
    seen.add(str(record['id']))
    raw = {role: record[key] for role, key in keys.items() if key in record}
    out.append((str(record['id']), raw, record.get('choices') or shared))
  if not out:
    raise ConfigError(f'`log.score.file={path}`: holds no examples')
  return out


def _features(run, raw, index):
  """The objective's truncated features of one raw example."""
  example = {role: (np.asarray(run.tokenizer.encode(value), np.int32) if role in TEXT_ROLES
                    else int(value)) for role, value in raw.items()}
  features = run.objective.features(example, np.random.default_rng([run.config.train.seed,
                                                                     index]))
  return packing.truncate(features, run.objective.stream_lengths)


def _batches(run, features):
  """Unpacked batches (one example per row) of `features`, train.batch_size rows each."""
  size = int(run.config.train.batch_size)
  for start in range(0, len(features), size):
    part = features[start:start + size]
    yield start, len(part), packing.build([[f] for f in part], run.objective.stream_lengths,
                                          size)


@functools.lru_cache(maxsize=None)
def _per_row(eval_step):
  """jit(params, batch, frozen) -> {metric: (sum [B], count [B])}: the eval step of each row
  alone."""
  def rows(params, batch, frozen):
    return jax.vmap(lambda row: eval_step(params, jax.tree.map(lambda v: v[None], row),
                                          frozen))(batch)
  return jax.jit(rows)


def per_example(run, params, features):
  """{metric: (sums, counts)} numpy arrays, one entry per example of `features` (the
  objective's whole-eval-set arrays, `gathered`, left out)."""
  fn = _per_row(run.trainer.eval_step)
  sums = {}
  for _, n, batch in _batches(run, features):
    out = jax.device_get(fn(params, batch, run.trainer.frozen_arrays()))
    for name in run.objective.gathered:
      out.pop(name)
    for name, (s, c) in out.items():
      got = sums.setdefault(name, ([], []))
      got[0].extend(np.asarray(s)[:n].tolist())
      got[1].extend(np.asarray(c)[:n].tolist())
  return {k: (np.asarray(s), np.asarray(c)) for k, (s, c) in sums.items()}


def _decode(run, params, features):
  """Greedy (log.decode's strategy) outputs of every example, in order."""
  model = run.trainer.model(params)
  spec = Spec.from_mapping(run.config.log.decode)
  out = []
  for start, n, batch in _batches(run, features):
    out += run.objective.predict(model, batch, run.tokenizer,
                                 max_new_tokens=generation.max_new_tokens(run.config),
                                 spec=spec, limit=n, first_index=start)
  return out


def _ranked(run, params, examples):
  """{example index: index of its choice with the lowest summed loss as the target}."""
  flat, owner = [], []
  for i, (_, raw, choices) in enumerate(examples):
    for choice in choices or ():
      flat.append(_features(run, {**raw, 'targets': choice}, i))
      owner.append(i)
  if not flat:
    return {}
  losses = per_example(run, params, flat)['loss'][0]
  by_example = {}
  for i, loss in zip(owner, losses):
    by_example.setdefault(i, []).append(loss)
  return {i: int(np.argmin(values)) for i, values in by_example.items()}


def score(run, params):
  """One record per example of the score file (see the module docstring)."""
  examples = read_examples(run.config)
  features = [_features(run, raw, i) for i, (_, raw, _) in enumerate(examples)]
  metrics = per_example(run, params, features)
  records = [{'id': example_id, 'loss': float(metrics['loss'][0][i]),
              'tokens': int(metrics['loss'][1][i])}
             for i, (example_id, _, _) in enumerate(examples)]
  if 'bits_per_byte' in metrics:
    for i, r in enumerate(records):
      r['bytes'] = int(round(float(metrics['bits_per_byte'][1][i])))
  if run.objective.head == 'classification' and 'accuracy' in metrics:
    for i, r in enumerate(records):
      r['correct'] = int(metrics['accuracy'][0][i] > 0)
  best = _ranked(run, params, examples)
  for i, k in best.items():
    choice = examples[i][2][k]
    records[i].update(choice=choice, correct=int(choice.strip() == str(
        examples[i][1].get('targets', '')).strip()))
  if run.objective.corpus_metrics and not best:
    for r, sample in zip(records, _decode(run, params, features)):
      r.update(prediction=sample['prediction'], reference=sample['reference'])
  return records


def same_text(a, b):
  """Exact match after whitespace normalisation (also the comparison tables')."""
  return ' '.join(a.split()) == ' '.join(b.split())


def summary(run, records):
  """{'test/<metric>': value} of scored records: loss per scored token, bits per byte, accuracy
  and exact match in %, and the objective's corpus metrics (BLEU) over the decoded examples."""
  tokens = sum(r['tokens'] for r in records)
  out = {'test/loss': sum(r['loss'] for r in records) / max(tokens, 1)}
  if records and all('bytes' in r for r in records):
    out['test/bits_per_byte'] = (sum(r['loss'] for r in records) / math.log(2) /
                                 max(sum(r['bytes'] for r in records), 1))
  if all('correct' in r for r in records):
    out['test/accuracy'] = 100.0 * sum(r['correct'] for r in records) / len(records)
  decoded = [r for r in records if 'prediction' in r]
  if decoded and len(decoded) == len(records):
    out['test/exact_match'] = 100.0 * sum(same_text(r['prediction'], r['reference'])
                                          for r in records) / len(records)
    out.update({f'test/{k}': v for k, v in run.objective.score(decoded).items()})
  return out


def last_records(run_dir):
  """The records of a run's last scores/step_N.jsonl ([] if none)."""
  files = glob.glob(os.path.join(run_dir, 'scores', 'step_*.jsonl'))
  if not files:
    return []
  last = max(files, key=lambda p: int(re.findall(r'step_(\d+)', p)[-1]))
  with open(last, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def path(run_dir, step):
  return os.path.join(run_dir, 'scores', f'step_{step}.jsonl')


def score_at(run, params, step):
  """Score the score file at `step`, write the records (process 0); {'test/...': value}."""
  records = score(run, params)
  if distributed.is_primary():
    out = path(run.dir, step)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with atomic_write(out) as tmp, open(tmp, 'w', encoding='utf-8') as f:
      for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + '\n')
  values = summary(run, records)
  distributed.print_once(f'scored {len(records)} examples of {settings(run.config)["file"]}: '
                         + ', '.join(f'{k} {v:.4f}' for k, v in values.items()))
  return values
