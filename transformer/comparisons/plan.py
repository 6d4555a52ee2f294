"""Architecture x objective comparisons the T5 way (Raffel et al. 2020, Table 2): pretrain every
cell on the same corpus at a matched budget of training FLOPs, fine-tune every pretrained
checkpoint on the same downstream tasks with the same budget, over seeds; compare the scores.

  ./launch.sh compare experiments/compare_t5_table2.py --workdir runs [--seeds 3]
      [--finetune_seeds 1] [--scale tiny|small|base] [--parallel K] [--results]
      [--allow_mismatch] [--budget flops|steps] [--flops matmul|6n|6n_attn] [--list]
      [--slurm] [--phase all|pretrain|finetune] [--index I] [--deterministic] [--lr_grid]
      [--config.a.b=v ...]

A declaration file (beside the sweeps) names:
  EXPERIMENT   the experiment directory: every run of both phases lives in
               <workdir>/<EXPERIMENT>/<run>/, so TensorBoard overlays them by tag
  BASE         a config file; SCALES[scale]['size'] is its size argument
  SCALES       {scale: {'size', 'pretrain_steps' (of the BASELINE cell; they set the FLOPs
               budget), 'pretrain' and 'finetune' (overrides of every run of the phase),
               optional 'corpus': what every cell pretrains on, 'embedded' (the default:
               corpora.py's split of the stdlib text) or a TFDS name as data.source spells it,
               e.g. 'c4/en'; --corpus replaces it}}
  CELLS        {cell: overrides} (or cells(scale) returning them): model.family, objective,
               sizes and stream lengths of each (architecture, objective); 'objective':
               'prefix_lm' (either family) is seq2seq on the (prefix, continuation) pairs of
               the pretraining corpus, one split per text for both (data.prefix_pairs);
               three keys are not config keys: 'cost' (default 1) the cell's pretraining
               FLOPs as a fraction of the baseline's (T5 Table 2's cost column, e.g. 0.5 for
               the encoder-decoder with L/2 + L/2 layers); 'pretrain': False a control: fine-tuned from random init
               with the same tokenizer (what the task alone gives); 'sizes': ('xs', ...) the
               cell also runs at these SIZES (rows <cell>@<size>; scaling.py fits them)
  SIZES        optional {scale: {size: overrides}}: model sizes a cell may list (the baseline
               must list every size a cell does: each size's budget is the baseline's there)
  TASKS        {task: comparisons.generation(...) | classification(...)}
  BASELINE     the cell the paired comparison is against
  LR_GRID      optional {scale: {'pretrain': lrs, 'finetune': lrs}}: with --lr_grid each cell's
               learning rates are chosen from these on dev data (comparisons/lr_grid.py)

Budgets (--budget flops, the default): a cell's training FLOPs are FLOPs per token under the
convention --flops names (monitoring/accounting.py: matmul = 3 x forward matmuls with the logits
at every stream position, 6n = Kaplan's 6N, 6n_attn = 6N + attention as in PaLM) x tokens per
example x batch size x steps; each cell gets the steps that spend its cost x the baseline's
budget (unless it pins `train.steps`), and a cell more than 10% off its declared cost is refused
(one line naming the cells, their ratios and costs) unless --allow_mismatch. --budget steps
(T5's protocol): every cell runs the baseline's steps (a cell pinning other steps is refused
likewise) and its FLOPs are only reported. The table shows the steps and the FLOPs under every
convention; a cell whose logits pass 20% of its matmul FLOPs gets a one-line warning. The model
vocabulary is the shared tokenizer's size rounded up to a multiple of 128 (as T5's 32,128 for
32,100 pieces); a cell pinning `model.vocab_size` more than 2x that is refused. Pretraining
reads stdlib docstrings less the ~15% of module files the tests come from (comparisons/corpora.py,
a warning past ~4 epochs); one tokenizer learns that text + the tasks' training text (never test
text); a TFDS corpus (SCALES' 'corpus') replaces the pretraining text, not the tokenizer's, and
must be prepared on disk first (check_corpus: one line before anything is written; --list needs
no data); fine-tuning starts from the pretraining checkpoint with a fresh head
(`checkpoint.init_from`, which carries that tokenizer along), the protocol of comparisons/tasks.py.

Runs go through the sweep runner (transformer/sweeps/runner.py), one phase after the other:
completed runs are skipped and interrupted ones resume, so a killed comparison picks up where
it stopped when the same command is run again. Run names: pre_<cell>_s<seed> and
ft_<task>_<cell>_s<seed>; with --finetune_seeds F (nested seeds: F fine-tuning runs of each
pretraining run) fine-tuning seed f > 0 is ft_<task>_<cell>_s<seed>_f<f> with train.seed
seed + 1000 f (f = 0 keeps the name and train.seed of a comparison without nesting). Results
(comparisons/results.py): comparison.md / .csv / .png under the experiment directory; --results
rebuilds them from the event files.
"""

import dataclasses
import math
import os
import shutil
import types

from transformer.errors import ConfigError
from transformer.files import atomic_write
from transformer.comparisons import budget as budget_lib
from transformer.comparisons import corpora, lr_grid, manifest, scaling
from transformer.comparisons import tasks as compare_tasks
from transformer.sweeps import runner

SCALE_NAMES = ('tiny', 'small', 'base')
FINETUNE_SEED_STRIDE = 1000


@dataclasses.dataclass
class Plan:
  """What a declaration means at one scale and seed count: every run of both phases."""
  path: str
  module: types.ModuleType
  scale: str
  seeds: int
  extra: dict
  finetune_seeds: int = 1                                      # per pretraining seed
  exp_dir: str = ''
  spec: str = ''
  cells: dict = dataclasses.field(default_factory=dict)        # cell -> pretrain overrides
  budget: dict = dataclasses.field(default_factory=dict)       # cell -> accounting row
  costs: dict = dataclasses.field(default_factory=dict)        # cell -> declared cost ratio
  budget_kind: str = 'flops'                                   # flops | steps
  convention: str = 'matmul'                                   # FLOP_CONVENTIONS
  warnings: list = dataclasses.field(default_factory=list)     # one line each, printed
  skipped: dict = dataclasses.field(default_factory=dict)      # (task, cell) -> reason
  controls: set = dataclasses.field(default_factory=set)       # cells fine-tuned from scratch
  only_tasks: tuple = ()                                       # --tasks (all when empty)
  lr_grid: dict = dataclasses.field(default_factory=dict)      # --lr_grid: phase -> values
  lr: dict = dataclasses.field(default_factory=dict)           # chosen: lr_grid.choose
  corpus: str = corpora.EMBEDDED                               # what every cell pretrains on

  def declared(self, cell):
    """The declaration's overrides of `cell` (of its base cell for `<cell>@<size>`)."""
    return self.module.CELLS[scaling.split(cell)[0]]

  @property
  def tasks(self):
    """The declaration's TASKS, or those --tasks names."""
    return {k: v for k, v in self.module.TASKS.items()
            if not self.only_tasks or k in self.only_tasks}

  @property
  def baseline(self):
    return self.module.BASELINE

  def pretrain_name(self, cell, seed):
    return f'pre_{cell}_s{seed}'

  def finetune_name(self, task, cell, seed, finetune_seed=0):
    return f'ft_{task}_{cell}_s{seed}' + (f'_f{finetune_seed}' if finetune_seed else '')

  def finetune_train_seed(self, seed, finetune_seed=0):
    return seed + FINETUNE_SEED_STRIDE * finetune_seed


def load(path, scale, seeds, workdir, extra=None, finetune_seeds=1, budget='flops',
         flops='matmul', tasks=(), tune_lr=False, corpus=''):
  """The Plan of declaration file `path` (ConfigError for a bad declaration); `tasks`: run
  only these of its TASKS; `tune_lr`: choose each cell's learning rates (comparisons/lr_grid.py);
  `corpus`: pretrain on this instead of the scale's declared corpus."""
  module = runner.load_module(path, wanted=('CELLS', 'cells'))
  unknown = sorted(set(tasks) - set(getattr(module, 'TASKS', {})))
  if unknown:
    raise ConfigError(f'--tasks {",".join(unknown)}: {path} declares tasks '
                      f'{", ".join(getattr(module, "TASKS", {}))}')
  for attr in ('SCALES', 'TASKS', 'BASELINE'):
    if not hasattr(module, attr):
      raise ConfigError(f'comparison file {path}: define {attr} '
                        '(see transformer/comparisons/plan.py)')
  if scale not in module.SCALES:
    raise ConfigError(f'--scale {scale}: {path} declares scales {", ".join(module.SCALES)}')
  if not hasattr(module, 'CELLS'):   # cells(scale): the cells' overrides at one scale
    module.CELLS = module.cells(scale)
  if module.BASELINE not in module.CELLS or not module.CELLS[module.BASELINE].get('pretrain',
                                                                                 True):
    raise ConfigError(f'comparison file {path}: BASELINE {module.BASELINE!r} is not one of '
                      f'the pretrained cells ({", ".join(module.CELLS)})')
  _check_options(seeds, finetune_seeds, budget, flops)
  plan = Plan(path, module, scale, seeds, dict(extra or {}), finetune_seeds, budget_kind=budget,
              convention=flops, only_tasks=tuple(tasks),
              corpus=corpus or module.SCALES[scale].get('corpus', corpora.EMBEDDED))
  plan.exp_dir = os.path.join(workdir, module.EXPERIMENT)
  if tune_lr:
    plan.lr_grid = lr_grid.grid(module, scale, path)
    if 'opt.learning_rate' in plan.extra:
      raise ConfigError('--config.opt.learning_rate: --lr_grid chooses every cell\'s learning '
                        'rate; drop one of the two')
  plan.spec = f'{module.BASE}:{module.SCALES[scale]["size"]}'
  sizes = getattr(module, 'SIZES', {}).get(scale, {})
  for cell, overrides in module.CELLS.items():
    overrides = dict(overrides)
    listed = overrides.pop('sizes', ())
    control = not overrides.pop('pretrain', True)
    cost = budget_lib.checked_cost(path, cell, overrides.pop('cost', 1.0))
    for size in ('', *listed):
      if size and size not in sizes:
        raise ConfigError(f'comparison file {path}: cell {cell!r} lists size {size!r}; SIZES'
                          f'[{scale!r}] declares {", ".join(sizes) or "none"}')
      name = f'{cell}{scaling.SEP}{size}' if size else cell
      plan.costs[name] = cost
      if control:
        plan.controls.add(name)
      plan.cells[name] = _pretrain_overrides(plan, {**overrides, **sizes.get(size, {})})
  missing = {scaling.split(c)[1] for c in plan.cells} - {
      scaling.split(c)[1] for c in plan.cells if scaling.split(c)[0] == module.BASELINE}
  if missing:
    raise ConfigError(f'comparison file {path}: cells run at size(s) {", ".join(sorted(missing))} '
                      f'that BASELINE {module.BASELINE!r} does not list; add them to its '
                      "'sizes' (each size's budget is the baseline's at that size)")
  budget_lib.resolve_vocabulary(plan)
  return plan


def _check_options(seeds, finetune_seeds, budget, flops):
  if seeds < 1:
    raise ConfigError(f'--seeds {seeds}: give at least 1 (3 or more for an interval)')
  if finetune_seeds < 1:
    raise ConfigError(f'--finetune_seeds {finetune_seeds}: give at least 1 fine-tuning run per '
                      'pretraining run')
  if budget not in budget_lib.BUDGETS:
    raise ConfigError(f'--budget {budget}: choose one of {", ".join(budget_lib.BUDGETS)}')
  if flops not in budget_lib.FLOP_CONVENTIONS:
    raise ConfigError(f'--flops {flops}: choose one of {", ".join(budget_lib.FLOP_CONVENTIONS)}')


def _pretrain_overrides(plan, cell):
  """A cell's pretraining overrides: the plan's corpus (the embedded text without the held-out
  module files, or a TFDS corpus by name). A prefix LM of either family reads the same (prefix,
  continuation) pairs of it (one split point per text, data/prefix_pairs.py: T5 sec. 3.3.1), as
  seq2seq: the encoder reads the prefix, or the decoder reads it bidirectionally before the
  continuation."""
  scale = plan.module.SCALES[plan.scale]
  out = {**scale.get('pretrain', {}), **cell}
  if 'data.source' not in out and corpora.is_tfds(plan.corpus):
    out['data.source'] = plan.corpus   # its text field: data.text_key, else the source's own
  elif 'data.source' not in out:
    out.update({'data.source': 'jsonl:' + corpora.pretrain_file(os.path.abspath(plan.exp_dir)),
                'data.text_key': 'text'})
  if out.get('objective') == 'prefix_lm':
    out.update({'objective': 'seq2seq', 'data.prefix_pairs': True})
  return out


def _chosen(plan, *key):
  """{'opt.learning_rate': the value lr_grid chose for key} ({} before or without a choice)."""
  return {'opt.learning_rate': plan.lr[key]} if key in plan.lr else {}


def _every(steps, parts):
  return max(1, math.ceil(steps / parts))


def pretrain_runs(plan, tokenizer):
  """The sweep-runner run dicts of the pretraining phase."""
  runs = []
  for cell, overrides in plan.cells.items():
    if cell in plan.controls:
      continue
    steps = plan.budget[cell]['steps']
    for seed in range(plan.seeds):
      runs.append({**overrides, 'run_name': plan.pretrain_name(cell, seed), 'train.seed': seed,
                   'train.steps': steps, 'train.eval_every': _every(steps, 4),
                   'checkpoint.every': _every(steps, 4), 'data.tokenizer': tokenizer,
                   **plan.extra, **_chosen(plan, 'pretrain', cell)})
  return runs


def finetune_runs(plan, finished=None, tokenizer=''):
  """The fine-tuning run dicts (of pretraining runs in `finished`, all when None; a control
  cell's from random init with `tokenizer`); fills plan.skipped with (task, cell): why the cell
  has no score on that task."""
  scale = plan.module.SCALES[plan.scale]
  common = scale.get('finetune', {})
  steps = int(common.get('train.steps', 100))
  runs = []
  for task_name, task in plan.tasks.items():
    for cell, pre in plan.cells.items():
      family = pre.get('model.family', 'encoder_decoder')
      reason = task.unavailable()
      overrides, why = compare_tasks.finetune_overrides(task_name, task, family,
                                                        os.path.abspath(plan.exp_dir))
      if reason or why:
        plan.skipped[(task_name, cell)] = reason or why
        continue
      model = {k: v for k, v in pre.items() if k.startswith('model.')}
      for seed in range(plan.seeds):
        source = plan.pretrain_name(cell, seed)
        if cell in plan.controls:    # no pretraining: random init, the shared tokenizer
          start = {'data.tokenizer': tokenizer}
        elif finished is not None and source not in finished:
          continue
        else:
          start = {'checkpoint.init_from': os.path.abspath(os.path.join(plan.exp_dir, source))}
        for ft in range(plan.finetune_seeds):
          runs.append({**model, **common, **overrides, 'run_name': plan.finetune_name(
              task_name, cell, seed, ft), 'train.seed': plan.finetune_train_seed(seed, ft),
                       'train.steps': steps, 'train.eval_every': steps, 'checkpoint.every': steps,
                       **start, **plan.extra, **_chosen(plan, 'finetune', cell, task_name)})
  return runs


def sweep(plan, runs):
  """A runner.Sweep over `runs` in the comparison's experiment directory."""
  module = types.SimpleNamespace(BASE=plan.spec, EXPERIMENT=plan.module.EXPERIMENT,
                                 OVERRIDES={}, sweep=lambda: runs)
  return runner.Sweep(plan.path, module=module)


def shared_tokenizer(plan):
  """The one SentencePiece model of every pretraining run, trained once (and copied into
  <experiment>/data/tokenizer.model so the comparison is self-contained)."""
  from transformer import data  # pylint: disable=import-outside-toplevel
  kept = corpora.data_path(os.path.abspath(plan.exp_dir), 'tokenizer.model')
  if not os.path.exists(kept):
    text = 'text:' + os.path.abspath(corpora.tokenizer_file(plan.exp_dir))
    config = budget_lib.config_of(plan, {**plan.cells[plan.baseline], 'data.source': text,
                                         'data.prefix_pairs': False})
    with atomic_write(kept) as tmp:
      shutil.copyfile(data.get_tokenizer(config).model_path, tmp)
  return kept


def _phase(plan, name, runs, args):
  """Run one phase through the sweep runner; {run: status}."""
  if not runs:
    return {}
  selected = sweep(plan, runs)
  index = args.index if args.phase == name else None
  if index is not None and not 0 <= index < len(selected.runs):
    raise ConfigError(f'--index {index}: the {name} phase has runs 0..{len(selected.runs) - 1}')
  print(f'[compare] {name}: {len(selected.runs)} run(s)')
  return runner.run(selected, os.path.dirname(os.path.abspath(plan.exp_dir)),
                    parallel=args.parallel, index=index)


def check_corpus(plan):
  """ConfigError (one line) unless the plan's TFDS corpus is prepared in the TFDS data_dir: the
  comparison never downloads or builds one (C4 is hundreds of GB and needs Apache Beam), so
  without it on disk (offline, or not built yet) it stops before anything is written."""
  corpus = plan.corpus
  if not corpora.is_tfds(corpus):
    return
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from transformer.data import sources  # pylint: disable=import-outside-toplevel
  data_dir = sources.data_dir(budget_lib.config_of(plan, plan.cells[plan.baseline]))
  known = sources.KNOWN.get(corpus)
  name = known.name if known else corpus
  try:
    prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
  except Exception as e:  # pylint: disable=broad-except  (an unknown name, a bad data_dir)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    prepared, why = False, f'not available ({first})'
  else:
    why = f'not prepared in {data_dir}'
  if not prepared:
    raise ConfigError(
        f'`corpus={corpus}` (scale {plan.scale}): the TFDS pretraining corpus {name} is {why}; '
        f'build it first where there is internet (`tfds build {name} --data_dir DIR`, then '
        'TFDS_DATA_DIR=DIR or --config.data.data_dir=DIR) or pretrain on the embedded corpus '
        'with --corpus embedded')


def execute(plan, args):
  """Prepare the data and tokenizer, pretrain, fine-tune what pretrained; {run: status}."""
  check_corpus(plan)
  corpora.prepare(plan.exp_dir, plan.tasks, plan.corpus)
  tokenizer = shared_tokenizer(plan)
  if not corpora.is_tfds(plan.corpus):   # a TFDS corpus is not counted (c4: ~156B tokens)
    corpora.warn_epochs(plan.exp_dir, plan.budget, tokenizer)
  manifest.write(plan, corpora.data_path(plan.exp_dir))
  outcome = {}
  if args.phase in ('all', 'pretrain'):
    outcome.update(_tuned_phase(plan, 'pretrain', lambda: pretrain_runs(plan, tokenizer), args))
  if args.phase in ('all', 'finetune'):
    finished = {r['run_name'] for r in pretrain_runs(plan, tokenizer) if runner.finished_step(
        os.path.join(plan.exp_dir, r['run_name'])) == r['train.steps']}
    outcome.update(_tuned_phase(plan, 'finetune',
                                lambda: finetune_runs(plan, finished, tokenizer), args))
  return outcome


def _tuned_phase(plan, name, runs, args):
  """Run a phase (`runs()` its run dicts); with --lr_grid first its tuning runs, whose choices
  the reported runs then use."""
  outcome = {}
  if plan.lr_grid.get(name):
    tuning = (lr_grid.pretrain_runs if name == 'pretrain' else lr_grid.finetune_runs)(plan, runs())
    outcome.update(_phase(plan, f'{name} learning-rate grid', tuning, args))
    lr_grid.choose(plan, name)
  outcome.update(_phase(plan, name, runs(), args))
  return outcome
