"""Fair hyperparameters: a learning rate per cell, chosen on dev data, never on the test list.

A declaration may name a grid per scale,
  LR_GRID = {'tiny': {'pretrain': (1e-3, 3e-3, 1e-2), 'finetune': (1e-3, 3e-3)}}
and `./launch.sh compare FILE --lr_grid` then tunes every cell before each phase (either list
may be left out: that phase keeps the declared `opt.learning_rate`):

  pretraining  every pretrained cell trains once per value with seed TUNE_SEED (no reported run
               uses it) and its own budget, as tune_pre_<cell>_lr<value>; the value whose run
               ends with the lowest eval/loss on the pretraining validation split (held-out
               pretraining text, never a task's) becomes the cell's `opt.learning_rate` for
               every reported seed
  fine-tuning  every (task, cell) fine-tunes its pretraining seed 0 (a control cell: random
               init) once per value, as tune_ft_<task>_<cell>_lr<value>, on the task's
               training file less a dev split and scored on that dev split
               (data/<task>/dev.jsonl: the training examples whose id hashes to bucket 0 of
               DEV_BUCKETS, at most the test list's size; tune_train.jsonl is the rest); the
               value with the highest dev accuracy (the lower dev loss breaks ties) for
               classification, the lowest dev loss per target token otherwise, is used by
               every reported fine-tuning run of that (task, cell)

A run that fails (a diverged loss stops training) counts as the worst score; a cell none of whose
values finished is one line naming it. The choices and every value's dev score are written to
<experiment>/lr_choice.json; the comparison table prints them (`markdown`) and the CSV carries
the value each row used. The tuning runs resume and are skipped when done, like the others.
"""

import json
import math
import os
import zlib

from transformer.errors import ConfigError
from transformer.files import atomic_write
from transformer.comparisons import corpora
from transformer.comparisons import tasks as compare_tasks
from transformer.monitoring.events import read_events
from transformer.sweeps import runner
from transformer.training import scoring

PHASES = ('pretrain', 'finetune')
TUNE_SEED = 7919
DEV_BUCKETS = 10
CHOICE_FILE = 'lr_choice.json'


def grid(module, scale, path):
  """{'pretrain': values, 'finetune': values} of the declaration's LR_GRID at `scale` (a phase
  it leaves out: ()); ConfigError when it declares none or a value is not a positive number."""
  declared = getattr(module, 'LR_GRID', {}).get(scale)
  if not declared:
    raise ConfigError(f'--lr_grid: {path} declares no LR_GRID for scale {scale!r}; add '
                      "LR_GRID = {scale: {'pretrain': (...), 'finetune': (...)}} "
                      '(transformer/comparisons/lr_grid.py)')
  unknown = sorted(set(declared) - set(PHASES))
  if unknown:
    raise ConfigError(f'{path}: LR_GRID[{scale!r}] has {unknown[0]!r}; its keys are '
                      f'{" and ".join(PHASES)}')
  out = {}
  for phase in PHASES:
    values = tuple(declared.get(phase, ()))
    for v in values:
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
        raise ConfigError(f'{path}: LR_GRID[{scale!r}][{phase!r}] has {v!r}; give positive '
                          'learning rates such as 1e-3')
    if len(set(values)) != len(values):
      raise ConfigError(f'{path}: LR_GRID[{scale!r}][{phase!r}] lists a value twice')
    out[phase] = values
  return out


def value_text(lr):
  return f'{lr:g}'


def tune_name(phase, lr, cell, task=''):
  """tune_pre_<cell>_lr<value> or tune_ft_<task>_<cell>_lr<value>."""
  return (f'tune_pre_{cell}' if phase == 'pretrain' else f'tune_ft_{task}_{cell}') + (
      f'_lr{value_text(lr)}')


# -- the dev split ------------------------------------------------------------------------------
def dev_file(exp_dir, task_name):
  return os.path.join(exp_dir, compare_tasks.DATA_DIR, task_name, 'dev.jsonl')


def tune_train_file(exp_dir, task_name):
  return os.path.join(exp_dir, compare_tasks.DATA_DIR, task_name, 'tune_train.jsonl')


def in_dev(example_id):
  """Whether a training example belongs to the dev split (a fixed hash of its id)."""
  return zlib.crc32(str(example_id).encode('utf-8')) % DEV_BUCKETS == 0


def split_dev(records, limit):
  """(tune_train, dev): dev the records in_dev (the first `limit`), tune_train the rest."""
  dev = [r for r in records if in_dev(r['id'])][:limit]
  chosen = {r['id'] for r in dev}
  return [r for r in records if r['id'] not in chosen], dev


def write_dev_split(exp_dir, task_name, task):
  """Write data/<task>/dev.jsonl and tune_train.jsonl from train.jsonl (once)."""
  paths = (tune_train_file(exp_dir, task_name), dev_file(exp_dir, task_name))
  if all(map(os.path.exists, paths)):
    return paths
  records = corpora.read_jsonl(compare_tasks.task_file(exp_dir, task_name, 'train'))
  for path, part in zip(paths, split_dev(records, task.eval_examples)):
    with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in part)
  return paths


# -- the tuning runs ----------------------------------------------------------------------------
def pretrain_runs(plan, reported):
  """The pretraining tuning runs: each cell's seed-0 run of `reported` once per grid value."""
  firsts = {plan.pretrain_name(cell, 0): cell for cell in plan.cells}
  runs = []
  for run in reported:
    cell = firsts.get(run['run_name'])
    if cell is None:
      continue
    for lr in plan.lr_grid['pretrain']:
      runs.append({**run, 'run_name': tune_name('pretrain', lr, cell), 'train.seed': TUNE_SEED,
                   'opt.learning_rate': lr})
  return runs


def finetune_runs(plan, reported):
  """The fine-tuning tuning runs: each (task, cell)'s first reported run (pretraining seed 0,
  fine-tuning seed 0) once per grid value, on tune_train.jsonl, scored on dev.jsonl."""
  exp_dir = os.path.abspath(plan.exp_dir)
  firsts = {plan.finetune_name(t, c, 0): (t, c) for t in plan.tasks for c in plan.cells}
  runs = []
  for run in reported:
    if run['run_name'] not in firsts:
      continue
    task_name, cell = firsts[run['run_name']]
    train, dev = write_dev_split(exp_dir, task_name, plan.tasks[task_name])
    for lr in plan.lr_grid['finetune']:
      runs.append({**run, 'run_name': tune_name('finetune', lr, cell, task_name),
                   'train.seed': TUNE_SEED, 'opt.learning_rate': lr,
                   'data.source': 'jsonl:' + train, 'log.score.file': dev})
  return runs


# -- choosing -----------------------------------------------------------------------------------
def _finished(run_dir):
  return runner.read_status(run_dir).get('status') == 'done'


def pretrain_score(run_dir):
  """(final eval/loss,) of a finished tuning run; (inf,) otherwise (lower is better)."""
  points = read_events(run_dir)['scalars'].get('eval/loss') if _finished(run_dir) else None
  loss = points[-1][1] if points else None
  return (loss if loss is not None and math.isfinite(loss) else math.inf,)


def finetune_score(run_dir, task):
  """A finished tuning run's dev score as a key to minimise: (-accuracy, loss per token) for
  classification, (loss per token,) otherwise; inf for a run with no dev scores."""
  records = scoring.last_records(run_dir) if _finished(run_dir) else []
  if not records:
    return (math.inf, math.inf) if task.kind == compare_tasks.CLASSIFICATION else (math.inf,)
  loss = sum(r['loss'] for r in records) / max(sum(r['tokens'] for r in records), 1)
  if task.kind == compare_tasks.CLASSIFICATION:
    return (-100.0 * sum(r.get('correct', 0) for r in records) / len(records), loss)
  return (loss,)


def pick(scores, what):
  """The value with the smallest score key; ConfigError when none finished."""
  best = min(scores, key=lambda lr: scores[lr])
  if not math.isfinite(scores[best][-1]):
    raise ConfigError(f'--lr_grid: no learning rate of {what} finished '
                      f'({", ".join(map(value_text, scores))}); see tune_*/train.log, then '
                      'change LR_GRID or the budget')
  return best


def choose(plan, phase):
  """Choose `phase`'s values from the finished tuning runs into plan.lr and lr_choice.json."""
  values = plan.lr_grid[phase]
  record = read(plan.exp_dir)
  if phase == 'pretrain':
    for cell in plan.cells:
      if cell in plan.controls:
        continue
      scores = {lr: pretrain_score(os.path.join(plan.exp_dir, tune_name(phase, lr, cell)))
                for lr in values}
      plan.lr[(phase, cell)] = pick(scores, f'cell {cell}')
      record.setdefault(phase, {})[cell] = _entry(plan.lr[(phase, cell)], scores)
  else:
    for task_name, task in plan.tasks.items():
      for cell in plan.cells:
        dirs = [os.path.join(plan.exp_dir, tune_name(phase, lr, cell, task_name))
                for lr in values]
        if (task_name, cell) in plan.skipped or not any(map(os.path.isdir, dirs)):
          continue   # not fine-tuned (its pretraining did not finish): nothing to choose
        scores = {lr: finetune_score(os.path.join(plan.exp_dir, tune_name(
            phase, lr, cell, task_name)), task) for lr in values}
        plan.lr[(phase, cell, task_name)] = pick(scores, f'{task_name} / {cell}')
        record.setdefault(phase, {}).setdefault(task_name, {})[cell] = _entry(
            plan.lr[(phase, cell, task_name)], scores)
  path = os.path.join(plan.exp_dir, CHOICE_FILE)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1)


def _entry(chosen, scores):
  return {'chosen': chosen, 'dev': {value_text(lr): list(s) for lr, s in scores.items()}}


def read(exp_dir):
  """lr_choice.json of an experiment ({} when it has none)."""
  path = os.path.join(exp_dir, CHOICE_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def used(record, cell, task=None):
  """The chosen learning rate in `record` (lr_choice.json, `read`) of a cell's pretraining
  (task None) or of its fine-tuning on `task`, or None when the experiment chose none."""
  entry = (record.get('pretrain', {}).get(cell) if task is None
           else record.get('finetune', {}).get(task, {}).get(cell))
  return entry['chosen'] if entry else None


def describe(plan):
  """The grid's line of the plan (--list); [] without --lr_grid."""
  if not plan.lr_grid:
    return []
  pretrained = len(set(plan.cells) - plan.controls)
  tuned = sum((t, c) not in plan.skipped for t in plan.tasks for c in plan.cells)
  counts = {'pretrain': pretrained, 'finetune': tuned}
  return ['learning-rate grid (chosen on dev data): ' + '; '.join(
      f'{phase} {", ".join(map(value_text, values))} ({counts[phase] * len(values)} tuning runs)'
      if values else f'{phase}: the declared rate' for phase, values in plan.lr_grid.items())]


def markdown(plan):
  """The table of chosen learning rates (none without lr_choice.json): a row per cell."""
  record = read(plan.exp_dir)
  if not record:
    return []
  tasks = [t for t in plan.tasks if t in record.get('finetune', {})]
  head = ['cell', 'pretraining lr'] + [f'{t} lr' for t in tasks]
  lines = ['Learning rates chosen per cell on dev data (`--lr_grid`, '
           'transformer/comparisons/lr_grid.py: pretraining by the validation loss of held-out '
           'pretraining text, fine-tuning on a dev split of each task\'s training file; the '
           'test lists never take part):', '',
           '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for cell in plan.cells:
    pre = used(record, cell)
    cells = [cell, 'n/a (control)' if cell in plan.controls else
             ('' if pre is None else value_text(pre))]
    cells += ['' if (v := used(record, cell, t)) is None else value_text(v) for t in tasks]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines + ['']
