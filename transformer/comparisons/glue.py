"""The GLUE suite: fine-tune one pretrained model on every GLUE task with the papers' recipe and
write the GLUE table (`./launch.sh glue`, transformer/glue.py).

  plan = load(init_from, workdir, tasks=('cola', 'stsb'), source_dir='')
  runs = finetune_runs(plan)          # the sweep runner's run dicts, one per (task, lr)
  rows = table(plan)                  # per task: the chosen lr and its dev scores

Recipe (BERT, Devlin et al. 2019, sec. 4.1 and A.3): the learning rate chosen on the dev set from
a small grid (2e-5, 3e-5, 5e-5 for encoders and decoders; T5's text-to-text models 1e-4, 3e-4,
1e-3), 3 epochs at batch size 32, AdamW (b2 0.999, weight decay 0.01), linear warmup over the
first 10% of the steps then linear decay to 0, dropout 0.1, sequences of 128 tokens. Encoders
and decoders fine-tune a fresh classification head (a one-unit regression head for STS-B,
objectives/classification.py); encoder-decoders read T5's text-to-text strings
(data.text_to_text, data/glue.py) and are scored on their decoded labels. Every run is
evaluated on the whole dev set at its last step; a task's score is the mean of its metrics
(x 100; MNLI's are matched and mismatched accuracy, the mismatched one evaluated afterwards on
the chosen run), the lr with the best score is chosen per task, and the GLUE score is the mean
of the task scores (the GLUE paper's macro-average).

Data: each task by its TFDS name (glue/cola, ...), or with `source_dir` from local files
<source_dir>/<task>.jsonl of {"text", "text_pair", "label"} records (train and dev by the local
sources' 5% hash split; no mismatched MNLI there).

Runs live in <workdir>/<experiment>/<task>_lr=<lr>/ (the sweep runner skips finished ones and
resumes interrupted ones); the table is written beside them as glue.md and glue.csv, and as a
TensorBoard text summary in <experiment>/glue_table/ (TensorBoard's TEXT tab).
"""

import dataclasses
import math
import os
import types

from transformer.data import glue as glue_tasks
from transformer.errors import ConfigError
from transformer.sweeps import runner

LRS = {'encoder': (2e-5, 3e-5, 5e-5), 'decoder': (2e-5, 3e-5, 5e-5),
       'encoder_decoder': (1e-4, 3e-4, 1e-3)}
BASES = {'encoder': 'configs/bert.py:tiny', 'decoder': 'configs/gpt2.py:tiny',
         'encoder_decoder': 'configs/t5.py:tiny'}   # the model comes from init_from
MISMATCHED = 'validation_mismatched'


@dataclasses.dataclass
class Plan:
  """What one suite command means: the model, the tasks and the recipe."""
  init_from: str
  family: str
  exp_dir: str
  experiment: str
  tasks: tuple
  lrs: tuple
  epochs: float = 3.0
  batch_size: int = 32
  seq_len: int = 128
  source_dir: str = ''
  extra: dict = dataclasses.field(default_factory=dict)
  sizes: dict = dataclasses.field(default_factory=dict)   # task -> (train, dev) examples

  def run_name(self, task, lr):
    return f'{task}_lr={runner.format_value(lr)}'

  def source(self, task):
    if self.source_dir:
      return 'jsonl:' + os.path.join(os.path.abspath(self.source_dir), f'{task}.jsonl')
    return glue_tasks.TASKS[task].tfds


def load(init_from, workdir, *, experiment='glue', tasks=(), lrs=(), epochs=3.0, batch_size=32,
         source_dir='', extra=None):
  """The Plan for `init_from` (one of our runs or an import-hf output); ConfigError for a bad
  task name, a directory without a config, or a family that cannot fine-tune."""
  from transformer.training import setup  # pylint: disable=import-outside-toplevel
  unknown = [t for t in tasks if t not in glue_tasks.TASKS]
  if unknown:
    raise ConfigError(f'--tasks {",".join(unknown)}: not GLUE tasks; choose from '
                      f'{",".join(glue_tasks.TASKS)}')
  saved = setup.pretrained_paths(init_from)[1]
  if not saved:
    raise ConfigError(f'--init_from {init_from}: no config.json there; give a run directory '
                      'that training or import-hf wrote')
  model = setup.read_run_config(saved)['model']
  family = model.get('family', 'decoder')
  if family not in BASES:
    raise ConfigError(f'--init_from {init_from}: model.family {family!r} cannot fine-tune on GLUE')
  seq_len = 128 if model.get('positions') != 'learned' else min(128, int(model.get('max_len', 128)))
  plan = Plan(os.path.abspath(init_from), family, os.path.join(workdir, experiment), experiment,
              tuple(tasks or glue_tasks.TASKS), tuple(lrs or LRS[family]), float(epochs),
              int(batch_size), seq_len, source_dir, dict(extra or {}))
  for task in plan.tasks:
    plan.sizes[task] = examples(plan, task)
  return plan


def _data_overrides(plan, task):
  """The data keys of `task`'s runs (the source, its pair field, T5's view)."""
  t = glue_tasks.TASKS[task]
  out = {'data.source': plan.source(task), 'data.pack': False, 'data.seq_len': plan.seq_len,
         'data.eval_split': t.eval_splits[0] if not plan.source_dir else 'validation'}
  if plan.source_dir and t.text_pair:
    out['data.text_pair_key'] = 'text_pair'
  if plan.family == 'encoder_decoder':
    out.update({'objective': 'seq2seq', 'data.text_to_text': task, 'data.targets_len': 8})
  else:
    out.update({'objective': 'classification', 'model.num_classes': t.num_classes})
  return out


def examples(plan, task):
  """(train, dev) examples of `task` (the steps of 3 epochs, the eval batches of the dev set)."""
  from transformer import config as config_lib  # pylint: disable=import-outside-toplevel
  from transformer import data  # pylint: disable=import-outside-toplevel
  overrides = {k: v for k, v in _data_overrides(plan, task).items() if k.startswith('data.')}
  config = config_lib.load(BASES[plan.family], {**overrides, **{
      k: v for k, v in plan.extra.items() if k.startswith('data.')}})
  source = data.get_source(config)
  t = glue_tasks.TASKS[task]
  roles = ('inputs', 'targets') if plan.family == 'encoder_decoder' else t.kinds
  count = lambda split: int(source.dataset(split, roles).reduce(0, lambda n, _: n + 1))
  return count(config.data.train_split), count(config.data.eval_split)


def finetune_runs(plan):
  """The sweep runner's run dicts: every task at every learning rate of the grid."""
  runs = []
  for task in plan.tasks:
    train, dev = plan.sizes[task]
    steps = max(1, math.ceil(plan.epochs * train / plan.batch_size))
    eval_steps = max(1, math.ceil(dev / plan.batch_size))
    for lr in plan.lrs:
      runs.append({
          **_data_overrides(plan, task), 'run_name': plan.run_name(task, lr),
          'checkpoint.init_from': plan.init_from, 'opt.learning_rate': lr,
          'opt.optimizer': 'adamw', 'opt.b2': 0.999, 'opt.weight_decay': 0.01,
          'opt.schedule': 'linear', 'opt.warmup_steps': math.ceil(0.1 * steps),
          'opt.end_lr_fraction': 0.0, 'model.dropout_rate': 0.1,
          'train.batch_size': plan.batch_size, 'train.steps': steps, 'train.eval_every': steps,
          'train.eval_steps': eval_steps, 'checkpoint.every': steps, 'checkpoint.keep': 1,
          'log.decode.examples': dev, 'log.samples': 0, **plan.extra})
  return runs


def sweep(plan):
  """A runner.Sweep over the plan's runs in <workdir>/<experiment>."""
  module = types.SimpleNamespace(BASE=BASES[plan.family], EXPERIMENT=plan.experiment,
                                 OVERRIDES={}, sweep=lambda: finetune_runs(plan))
  return runner.Sweep(f'glue suite ({plan.init_from})', module=module)


def final_scalars(run_dir):
  """{tag: last value} of a run's event files ({} before it logged)."""
  from transformer.monitoring.events import read_events  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(run_dir):
    return {}
  return {tag: points[-1][1] for tag, points in read_events(run_dir)['scalars'].items() if points}


def columns(task):
  """The table's metric columns of `task`: (column name, eval tag)."""
  t = glue_tasks.TASKS[task]
  if task == 'mnli':
    return [('mnli_m_accuracy', 'eval/accuracy'), ('mnli_mm_accuracy', 'mismatched/accuracy')]
  return [(f'{task}_{m}', f'eval/{m}') for m in t.metrics]


def task_score(values):
  """The mean of a task's metrics x 100, or None when one is missing or not finite."""
  if not values or any(v is None or not math.isfinite(v) for v in values):
    return None
  return 100.0 * sum(values) / len(values)
