"""Scaling fits (transformer/comparisons/scaling.py): a cell at several sizes, each matched to
the baseline at that size; its score fitted against log10 compute, the slope's interval, and the
compute-equivalent multiplier against the baseline."""

import math

import pytest
from scipy import stats as scipy_stats

from transformer.comparisons import budget as budget_lib
from transformer.comparisons import plan as plan_lib
from transformer.comparisons import scaling
from transformer.errors import ConfigError

DECLARATION = """
from transformer.comparisons import generation
BASE = 'configs/t5.py'
EXPERIMENT = 'sizes'
BASELINE = 'encdec'
SCALES = {'tiny': {'size': 'tiny', 'pretrain_steps': 100, 'pretrain': {'train.batch_size': 8},
                   'finetune': {}}}
SIZES = {'tiny': {'xs': {'model.d_model': 64, 'model.num_heads': 2, 'model.d_ff': 256}}}
CELLS = {'encdec': {'model.family': 'encoder_decoder', 'data.seq_len': 64,
                    'data.targets_len': 16, 'sizes': %s},
         'decoder': {'model.family': 'decoder', 'objective': 'causal_lm', 'data.seq_len': 81,
                     'sizes': ('xs',)}}
TASKS = {'docstring': generation('python_stdlib/docstrings', inputs_len=64, targets_len=16)}
"""


def test_sizes_are_rows_matched_to_the_baseline_at_their_size(tmp_path):
  path = tmp_path / 'sizes.py'
  path.write_text(DECLARATION % "('xs',)")
  plan = plan_lib.load(str(path), 'tiny', 1, str(tmp_path))
  assert list(plan.cells) == ['encdec', 'encdec@xs', 'decoder', 'decoder@xs']
  assert plan.cells['decoder@xs']['model.d_model'] == 64 and 'sizes' not in plan.cells['decoder']
  budget_lib.match_budget(plan)
  small = plan.budget['encdec@xs']
  assert small['steps'] == 100 and small['train_flops'] < plan.budget['encdec']['train_flops']
  assert plan.budget['decoder@xs']['train_flops'] == pytest.approx(small['train_flops'], rel=0.01)
  path.write_text(DECLARATION % '()')
  with pytest.raises(ConfigError, match=r"size\(s\) xs that BASELINE 'encdec' does not list"):
    plan_lib.load(str(path), 'tiny', 1, str(tmp_path))
  path.write_text(DECLARATION % "('xl',)")
  with pytest.raises(ConfigError, match=r"lists size 'xl'; SIZES\['tiny'\] declares xs"):
    plan_lib.load(str(path), 'tiny', 1, str(tmp_path))


def test_fit_slope_interval_and_multiplier_by_hand():
  # loss 5.0 - 0.5 per 10x compute exactly, plus noise +-0.01 at 3 computes x 2 seeds
  points = [(1e9, 5.0 - 0.5 * 9 + d) for d in (0.01, -0.01)] + [
      (1e10, 5.0 - 0.5 * 10 + d) for d in (0.02, -0.02)] + [(1e11, 5.0 - 0.5 * 11)] * 2
  fit = scaling.fit(points)
  x = [math.log10(f) for f, _ in points]
  ref = scipy_stats.linregress(x, [s for _, s in points])
  t = scipy_stats.t.ppf(0.975, 4)
  assert (fit.slope, fit.n, fit.sizes) == (pytest.approx(ref.slope), 6, 3)
  assert fit.slope_low == pytest.approx(ref.slope - t * ref.stderr)
  assert fit.slope_high == pytest.approx(ref.slope + t * ref.stderr)
  assert '3 sizes, 6 runs' in fit.text()
  assert scaling.fit([(1e9, 1.0), (1e9, 2.0)]) is None          # one compute: no fit
  two = scaling.fit([(1e9, 1.0), (1e10, 2.0)])
  assert two.slope == pytest.approx(1.0) and math.isnan(two.slope_low)
  # a cell 0.25 nats better at every compute than a baseline losing 0.5 per 10x: the baseline
  # needs 10^0.5 = 3.16x the compute to match it
  base = scaling.Fit(5.0, -0.5, -0.6, -0.4, 6, 3, 9.0, 11.0)
  cell = scaling.Fit(4.75, -0.5, -0.6, -0.4, 6, 3, 9.0, 11.0)
  assert scaling.multiplier(cell, base, 10.0) == (pytest.approx(10 ** 0.5), False)
  assert scaling.multiplier(base, base, 10.0) == (pytest.approx(1.0), False)
  assert scaling.multiplier(cell, base, 10.8)[1]      # 11.3 lies past the fitted 9..11
  assert scaling.multiplier(cell, None, 10.0) is None
  flat = scaling.Fit(5.0, -0.01, -0.3, +0.28, 6, 3, 9.0, 11.0)   # its interval holds 0
  assert scaling.multiplier(cell, flat, 10.0) is None
  assert scaling.split('decoder_lm@xs') == ('decoder_lm', 'xs')
  assert scaling.split('decoder_lm') == ('decoder_lm', '')


def test_markdown_reports_each_sized_cell_against_the_baseline():
  import types
  run = lambda value: types.SimpleNamespace(values={'loss': value})
  flops = {'encdec': 1e10, 'encdec@xs': 1e9, 'decoder': 1e10, 'decoder@xs': 1e9, 'other': 1e10}
  plan = types.SimpleNamespace(
      baseline='encdec', budget={c: {'train_flops': f} for c, f in flops.items()},
      tasks={'docstring': types.SimpleNamespace(metrics=('loss',))})
  scores = {'encdec': [5.0, 5.0], 'encdec@xs': [5.5, 5.5], 'decoder': [4.75, 4.75],
            'decoder@xs': [5.25, 5.25], 'other': [4.0]}
  collected = {'runs': {('docstring', c): [run(v) for v in values]
                        for c, values in scores.items()}}
  lines = scaling.markdown(plan, collected, {'loss': 'eval loss'})
  rows = {line.split(' | ')[0][2:]: line for line in lines if line.startswith('| ')}
  assert set(rows) == {'cell', 'decoder', 'encdec'}        # 'other' has one size: no fit
  assert '-0.5 [-0.5, -0.5] per 10x (2 sizes, 4 runs) | 1 (baseline)' in rows['encdec']
  assert '3.16x (extrapolated) |' in rows['decoder']   # 10^10.5 is past the baseline's 9..10


def test_the_one_variable_template_plans_every_value_at_every_size(tmp_path):
  import os
  path = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments', 'compare_positions.py')
  plan = plan_lib.load(path, 'tiny', 1, str(tmp_path))
  budget_lib.match_budget(plan)
  assert len(plan.cells) == 15 and {o['model.positions'] for o in plan.cells.values()} == {
      'relative', 'rotary', 'learned', 'alibi', 'none'}
  for cell, row in plan.budget.items():   # one variable: same steps and FLOPs within 1% per size
    reference = plan.budget['relative' + cell[len(cell.split('@')[0]):]]
    assert row['steps'] == reference['steps'] == 200
    assert row['train_flops'] == pytest.approx(reference['train_flops'], rel=0.01)


def test_compare_lists_the_positions_template_with_alibi_and_nope(tmp_path, capsys):
  """`./launch.sh compare experiments/compare_positions.py --list` plans the five positions (ALiBi
  and NoPE included) at both sizes with 2 seeds, running nothing."""
  import os
  from tests.comparisons.test_compare import _main
  path = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments', 'compare_positions.py')
  code, out, err = _main([path, '--workdir', str(tmp_path), '--list', '--seeds', '2'], capsys)
  assert code == 0, err
  for value in ('alibi', 'none', 'alibi@xs', 'none@xs'):
    assert value in out, out
