"""One run setup for every entry point: `prepare(config, workdir) -> Run`.

  run = prepare(config, workdir)      # tokenizer, resolved config, objective, mesh, trainer
  run.pipeline('train')               # this process's data of a split
  run.checkpointer(state)             # the run's checkpoints, checked against this model

Training, evaluation, the benchmarks and generation all start here, so the tokenizer, the
vocabulary size, an imported architecture and the run length are resolved one way. What the
objective reads is its declaration (`objective.fields`, data/fields.py): a tokenizer is built
and the vocabulary taken from it only where a field is text; otherwise `run.tokenizer` is None
and the model has no vocabulary. `prepare`
writes nothing: the run directory appears when training starts, so a refused config leaves
the disk as it was.
"""

import dataclasses
import json
import math
import os
from typing import Any

import jax

from transformer import data, models, objectives
from transformer.errors import ConfigError
from transformer.models.hparams import HParams
from transformer.training import checkpoint, optim, sharding, teacher
from transformer.training.trainer import Trainer

# Model keys that may differ from a checkpoint's without changing its parameters.
RUNTIME_MODEL_KEYS = ('dropout_rate', 'attention_dropout_rate', 'mlp_dropout', 'final_dropout',
                      'dtype', 'attention_impl', 'kernels', 'remat', 'num_classes', 'init',
                      'init_std')


@dataclasses.dataclass
class Run:
  """Everything a run's entry point needs, built once by `prepare`."""
  config: Any                  # the validated config, resolved against tokenizer and init_from
  dir: str                     # <workdir>/<experiment>/<run_name>
  tokenizer: Any               # None when the objective reads no text field
  objective: Any
  mesh: Any
  trainer: Trainer
  steps: int                   # total optimizer steps of the run

  @property
  def checkpoint_dir(self):
    return os.path.join(self.dir, 'checkpoints')

  def latest_step(self):
    """The newest checkpointed step of this run (None before its first checkpoint)."""
    if not os.path.isdir(self.checkpoint_dir):
      return None
    return checkpoint.Checkpointer(self.checkpoint_dir, every=self.config.checkpoint.every,
                                   keep=1, keep_best=False).latest_step()

  def checkpointer(self, state, *, resuming=True):
    """The run's Checkpointer; refuses checkpoints of another model and, when `resuming`
    training, of changed data-order settings."""
    c = self.config.checkpoint
    return checkpoint.Checkpointer(
        self.checkpoint_dir, every=c.every, keep=c.keep, keep_best=c.keep_best,
        async_save=c.async_save, fingerprint=fingerprint(self.config, state),
        settings=resume_settings(self.config) if resuming else None,
        model_defaults=HParams.defaults())

  def pipeline(self, split):
    """This process's `data.Pipeline` of 'train' or 'eval'."""
    return data.Pipeline(self.config, self.objective, self.tokenizer, split=split,
                         process_index=jax.process_index(), process_count=jax.process_count())


def prepare(config, workdir, *, devices=None):
  """The Run of `config` under `workdir` (on `devices`, default all); writes nothing."""
  path = run_dir(config, workdir)
  fields = objectives.declared_fields(config.objective)
  tokenizer = (data.get_tokenizer(config, roles=tuple(fields))
               if objectives.reads_text(config.objective) else None)
  config = resolve(config, tokenizer)
  objective = objectives.get(config, tokenizer)
  if getattr(objective, 'teacher_key', None):
    _attach_teacher(config, tokenizer, objective)
  steps = optim.total_steps(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  trainer = Trainer.create(config, objective, mesh, steps)
  return Run(config=config, dir=path, tokenizer=tokenizer, objective=objective, mesh=mesh,
             trainer=trainer, steps=steps)


def _attach_teacher(config, tokenizer, objective):
  """Load the teacher an objective learns from (`distill.teacher`: one of our runs or an
  import-hf output) into it (training/teacher.py)."""
  where = config.distill.teacher
  if not where:
    raise ConfigError(f'`{objective.teacher_key}`: empty; give the teacher, a run directory or '
                      'an import-hf output, e.g. --config.distill.teacher=runs/default/bert_tiny')
  ckpt_dir, saved = pretrained_paths(where)
  if not os.path.isdir(ckpt_dir) or saved is None:
    raise ConfigError(f'`{objective.teacher_key}={where}`: no run there (no config.json); give '
                      'a run directory or an import-hf output (python -m transformer.import_hf '
                      'converts a Hugging Face checkpoint)')
  recorded = data.tokenizer.recorded_tokenizer(where)
  if recorded:   # else an import-hf --weights_only teacher: its vocabulary size is checked
    teacher.same_vocabulary(where, tokenizer, data.tokenizer.load(recorded), recorded)
  teacher.attach(objective, read_run_config(saved)['model'], ckpt_dir, where)


def _dir_name(key, value):
  """`value` if it names one directory inside its parent; ConfigError otherwise."""
  seps = [s for s in (os.sep, os.altsep, '/') if s]
  if value in ('', '.', '..') or os.path.isabs(value) or any(s in value for s in seps):
    raise ConfigError(f'`{key}={value}`: must be one directory name (no path separators, '
                      "'.' or '..'), so the run stays inside --workdir; e.g. "
                      f'--config.{key}=my_{key}')
  return value


def run_dir(config, workdir):
  """<workdir>/<experiment>/<run_name>: both plain directory names, so runs stay in workdir."""
  return os.path.join(workdir, _dir_name('experiment', config.experiment),
                      _dir_name('run_name', config.run_name or 'run'))


def pretrained_paths(init_from):
  """(checkpoint dir, config.json or None) of `checkpoint.init_from`: one of our run directories,
  its checkpoints/ folder, or an import-hf output (step folders beside config.json)."""
  path = os.path.abspath(os.path.expanduser(init_from))
  if os.path.isdir(os.path.join(path, 'checkpoints')):   # a run directory
    path = os.path.join(path, 'checkpoints')
  candidates = [os.path.join(path, 'config.json')]
  if os.path.basename(path) == 'checkpoints':    # <run>/checkpoints: the run's own config.json
    candidates.append(os.path.join(os.path.dirname(path), 'config.json'))
  return path, next((c for c in candidates if os.path.exists(c)), None)


def read_run_config(path):
  """The dict of a run's (or an import-hf output's) config.json at `path`; one line if unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path}: not a readable config.json ({e}); point at a run directory '
                      'that training or import-hf wrote') from None


def resolve(config, tokenizer):
  """Fill what depends on data or a pretrained checkpoint: vocab size (from `tokenizer`; none
  when it is None, a model that reads no text), an imported architecture."""
  if config.checkpoint.init_from:
    saved = pretrained_paths(config.checkpoint.init_from)[1]
    if saved:
      model = read_run_config(saved)['model']
      for key, value in model.items():
        if key not in RUNTIME_MODEL_KEYS and key in config.model:
          config.model[key] = type(config.model[key])(value) if not isinstance(
              config.model[key], (tuple, list)) else value
      longest = max(config.data.seq_len, config.data.targets_len)
      if config.model.positions == 'learned' and longest > config.model.max_len:
        raise ConfigError(f'`data.seq_len={config.data.seq_len}`: longer than the '
                          f'{config.model.max_len} learned positions of checkpoint.init_from\'s '
                          f'model; set --config.data.seq_len={config.model.max_len} or less')
  if tokenizer is None:
    return config
  if not config.model.vocab_size:
    config.model.vocab_size = tokenizer.vocab_size
  elif config.model.vocab_size < tokenizer.vocab_size:
    raise ConfigError(f'`model.vocab_size={config.model.vocab_size}`: smaller than the tokenizer '
                      f'({tokenizer.vocab_size}); set it to 0 to take the tokenizer size')
  return config


def fingerprint(config, state):
  """What a checkpoint must match to be resumed: the parameter-shaping model keys and size."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in RUNTIME_MODEL_KEYS}
  shapes = {models.path_name(p): list(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(state['params'])[0]}
  return {'model': model, 'num_params': sum(math.prod(s) for s in shapes.values())}


def resume_settings(config):
  """What a resume compares with the checkpoint: the data order's keys and every opt.* key."""
  keys = {k: config[k.split('.')[0]][k.split('.')[1]] for k in checkpoint.ORDER_KEYS}
  return {**keys, **{f'opt.{k}': v for k, v in config.opt.items()}}
