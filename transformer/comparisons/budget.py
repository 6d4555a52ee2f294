"""A comparison's pretraining budgets: every cell's steps from the baseline's budget, checked.

  match_budget(plan)     each cell's steps (--budget flops: cost x the baseline's FLOPs at the
                         cell's size under the --flops convention; --budget steps: the
                         baseline's steps), its accounting row in plan.budget, warnings for
                         cells whose logits dominate; a cell more than 10% off is refused
  flops_row(config, ..)  parameters and FLOPs per step of one config under every convention
  resolve_vocabulary     every cell's model.vocab_size from the shared tokenizer's size
  checked_cost(...)      a cell's declared cost ratio, checked

plan.py's docstring says what the conventions and the checks mean to a declaration.
"""

from transformer import config as config_lib
from transformer.comparisons import scaling
from transformer.errors import ConfigError

MATCH_TOLERANCE = 0.10
BUDGETS = ('flops', 'steps')
FLOP_CONVENTIONS = ('matmul', '6n', '6n_attn')   # accounting.FLOP_CONVENTIONS, in table order
LOGITS_WARNING = 0.20          # share of a cell's matmul FLOPs spent in the logits
VOCAB_MULTIPLE = 128           # the model vocabulary: the tokenizer's, rounded up (T5: 32,128)
VOCAB_EXCESS = 2               # a pinned model vocabulary larger than this x the tokenizer's


def config_of(plan, overrides):
  return config_lib.load(plan.spec, {**overrides, **plan.extra})


def checked_cost(path, cell, value):
  """A cell's declared cost ratio, checked: a number > 0."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float(
      'inf'):
    raise ConfigError(f'comparison file {path}: cell {cell!r} cost={value!r}: give its '
                      "pretraining FLOPs as a positive fraction of the baseline's, e.g. 'cost': 0.5")
  return float(value)


def resolve_vocabulary(plan):
  """Every cell's model.vocab_size: the shared tokenizer's data.vocab_size (the baseline's)
  rounded up to a multiple of VOCAB_MULTIPLE, unless the cell or the command line pins it; a
  pinned one more than VOCAB_EXCESS x the tokenizer's is refused (its rows would never be read
  but would cost parameters and logits FLOPs)."""
  pieces = int(config_of(plan, plan.cells[plan.baseline]).data.vocab_size)
  rows = -(-pieces // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
  for cell, overrides in plan.cells.items():
    pinned = {**overrides, **plan.extra}.get('model.vocab_size')
    if pinned is None:
      overrides['model.vocab_size'] = rows
    elif int(pinned) > VOCAB_EXCESS * pieces:
      raise ConfigError(f'`model.vocab_size={pinned}` (cell {cell}): more than {VOCAB_EXCESS}x '
                        f'the {pieces}-piece shared tokenizer (data.vocab_size); drop it so the '
                        f'comparison uses {rows}, or raise data.vocab_size')


def flops_row(config, steps, convention='matmul'):
  """{family, objective, params, non_embedding, active_params, tokens_per_step, flops_per_step (under
  `convention`), steps, train_flops, flops: {convention: FLOPs per step}, logits_share (of the
  matmul FLOPs)} of a config."""
  from transformer.monitoring import accounting  # pylint: disable=import-outside-toplevel
  counts = accounting.count_params(accounting.abstract_model(config))
  flops = accounting.flops_per_token(config)
  tokens = flops['tokens_per_example'] * config.train.batch_size
  per_step = {name: accounting.train_flops_per_token(config, name, flops) * tokens
              for name in FLOP_CONVENTIONS}
  return {'family': config.model.family, 'objective': config.objective,
          'params': counts['total'], 'non_embedding': counts['non_embedding'],
          'active_params': counts.get('active', counts['total']),   # MoE: what a token uses
          'flops_per_step': per_step[convention], 'steps': steps,
          'train_flops': per_step[convention] * steps, 'tokens_per_step': tokens,
          'flops': per_step, 'logits_share': flops['logits'] / flops['total_forward']}


def _rows(plan):
  """{cell: (flops_row at its configured steps, whether it pins train.steps)}."""
  rows = {}
  for cell, overrides in plan.cells.items():
    config = config_of(plan, overrides)
    declared = plan.declared(cell)
    pinned = 'train.steps' in declared or 'train.steps' in plan.extra
    rows[cell] = (flops_row(config, config.train.steps, plan.convention), pinned)
    rows[cell][0]['objective'] = declared.get('objective', config.objective)
  return rows


def match_budget(plan, allow_mismatch=False, tolerance=MATCH_TOLERANCE):
  """Give every cell its steps (see the module docstring: --budget flops spends cost x the
  baseline's FLOPs, --budget steps runs the baseline's steps); fill plan.budget and
  plan.warnings; returns the baseline's pretraining FLOPs.

  A cell that pins train.steps keeps them and is checked: more than `tolerance` off its
  declared cost (flops) or the baseline's steps (steps) raises ConfigError naming every such
  cell."""
  rows = _rows(plan)
  base_row, base_pinned = rows[plan.baseline]
  base_steps = base_row['steps'] if base_pinned else int(
      plan.module.SCALES[plan.scale]['pretrain_steps'])
  budget = base_row['flops_per_step'] * base_steps
  # a cell at another size is matched against the baseline at that size (scaling.py)
  budgets = {scaling.split(c)[1]: rows[c][0]['flops_per_step'] * base_steps
             for c in rows if scaling.split(c)[0] == plan.baseline}
  by_flops = plan.budget_kind == 'flops'
  off = []
  for cell, (row, pinned) in rows.items():
    size_budget = budgets[scaling.split(cell)[1]]
    if cell in plan.controls:   # not pretrained: no budget to match
      row.update(steps=0, train_flops=0, budget_ratio=0.0, cost=0.0, objective='none (control)',
                 flops={k: 0 for k in row['flops']})
      plan.budget[cell] = row
      continue
    cost = plan.costs[cell]
    if pinned:
      steps = row['steps']
    else:
      steps = (max(1, round(cost * size_budget / row['flops_per_step'])) if by_flops
               else base_steps)
    ratio = row['flops_per_step'] * steps / size_budget
    row.update(steps=steps, train_flops=row['flops_per_step'] * steps, budget_ratio=ratio,
               cost=cost, flops={k: v * steps for k, v in row['flops'].items()})
    if by_flops and abs(ratio / cost - 1) > tolerance:
      off.append(f'{cell} at {ratio:.2f}x the budget, declared cost {cost:g}')
    elif not by_flops and abs(steps / base_steps - 1) > tolerance:
      off.append(f'{cell} at {steps} steps')
    if row['logits_share'] > LOGITS_WARNING:
      plan.warnings.append(f'warning: {cell}: the logits are {row["logits_share"]:.0%} of its '
                           f'matmul FLOPs (over {LOGITS_WARNING:.0%}); its budget depends on '
                           'the FLOP convention (--flops)')
    plan.budget[cell] = row
  if off and not allow_mismatch:
    raise ConfigError(_mismatch(plan, budget, base_steps, tolerance, off))
  return budget


def _mismatch(plan, budget, base_steps, tolerance, off):
  if plan.budget_kind == 'steps':
    return (f'pretraining steps differ from the baseline\'s {base_steps} ({plan.baseline}) by '
            f'more than {tolerance:.0%}: {", ".join(off)}; let the comparison choose their '
            'train.steps, or pass --allow_mismatch')
  return (f'pretraining FLOPs ({plan.convention}) differ from the declared cost x the budget '
          f'{budget:.3g} ({plan.baseline}) by more than {tolerance:.0%}: {", ".join(off)}; '
          "let the comparison choose their train.steps, declare the cell's 'cost', or pass "
          '--allow_mismatch')
