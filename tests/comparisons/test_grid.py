"""The full T5 grid and honest compute (issue 23): the 11 cells of compare_t5_table2.py, cells'
declared cost ratios, --budget steps|flops, the named FLOP conventions (by hand), the logits
warning, and the model vocabulary taken from the shared tokenizer."""

import csv
import os

import pytest

from configs import common
from transformer import compare
from transformer.comparisons import budget as budget_lib
from transformer.comparisons import plan as plan_lib
from transformer.comparisons import results
from transformer.monitoring import accounting

from tests.comparisons.test_compare import T5_TABLE2, _main, _write

GRID = ['encdec_denoise', 'encdec_lm', 'encdec_shared_denoise', 'encdec_shared_lm',
        'encdec_half_denoise', 'encdec_half_lm', 'decoder_denoise', 'decoder_lm',
        'prefix_denoise', 'prefix_lm', 'encoder_mlm']

# The baseline and its L/2 + L/2 twin pinned to the baseline's steps (T5's "cost M/2" row), at
# the tiny scale of compare_t5_table2.py: 0.545x the baseline's matmul FLOPs (the embedding and
# logits do not halve).
HALF = """
from transformer.comparisons import classification
BASE = 'configs/t5.py'
EXPERIMENT = 'half'
BASELINE = 'encdec'
SCALES = {'tiny': {'size': 'tiny', 'pretrain_steps': 240, 'pretrain': {'train.batch_size': 16},
                   'finetune': {}}}
_ENC_DEC = {'model.family': 'encoder_decoder', 'objective': 'span_corruption',
            'data.seq_len': 128, 'data.targets_len': 32}
CELLS = {'encdec': _ENC_DEC,
         'half': {**_ENC_DEC, 'model.num_layers': 1, 'train.steps': 240, 'cost': COST}}
TASKS = {'package': classification(classes=3, per_class=40, inputs_len=32)}
"""


def test_the_grid_has_t5s_ten_cells_and_bert_all_within_their_budget(tmp_path, capsys):
  code, out, err = _main([T5_TABLE2, '--workdir', str(tmp_path), '--list'], capsys)
  assert code == 0, err
  # the grid, its baseline and decoder LM at two more sizes, two controls
  assert '17 cells' in out and all(f'\n{cell} ' in out for cell in GRID)
  assert not os.path.exists(tmp_path / 'compare_t5_table2')    # --list writes nothing
  plan = plan_lib.load(T5_TABLE2, 'tiny', 1, str(tmp_path))
  assert [c for c in plan.cells if '@' not in c and not c.startswith('control_')] == GRID
  budget = budget_lib.match_budget(plan)
  base = plan.budget['encdec_denoise']
  for cell in ('encdec_half_denoise', 'encdec_half_lm'):
    assert plan.costs[cell] == 0.5 and plan.cells[cell]['model.num_layers'] == 1
    assert plan.budget[cell]['train_flops'] == pytest.approx(0.5 * budget, rel=0.01)
  assert plan.cells['decoder_denoise']['data.denoise_attention'] == 'causal'
  assert plan.cells['prefix_denoise']['data.denoise_attention'] == 'prefix'
  assert plan.cells['encdec_shared_lm']['objective'] == 'seq2seq'
  assert plan.budget['prefix_lm']['objective'] == 'prefix_lm'
  assert plan.budget['decoder_denoise']['steps'] == plan.budget['decoder_lm']['steps']
  assert base['steps'] == 240


@pytest.mark.parametrize('cost, accepted', [(0.5, True), (1, False)])
def test_half_depth_cell_is_checked_against_its_declared_cost(tmp_path, capsys, cost, accepted):
  path = _write(tmp_path, HALF.replace('COST', repr(cost)), 'half.py')
  code, out, err = _main([path, '--workdir', str(tmp_path), '--list'], capsys)
  if accepted:
    assert code == 0, err
    assert 'half' in out
    return
  assert code == 2 and err.count('\n') == 1, err
  assert 'half at 0.5' in err and 'declared cost 1' in err and "'cost'" in err
  assert 'encdec ' not in err and '--allow_mismatch' in err
  assert not os.path.exists(tmp_path / 'half')


def test_a_bad_cost_is_one_line(tmp_path, capsys):
  path = _write(tmp_path, HALF.replace('COST', '-1'), 'half.py')
  code, _, err = _main([path, '--workdir', str(tmp_path), '--list'], capsys)
  assert code == 2 and err.count('\n') == 1 and "'half' cost=-1" in err


def test_budget_steps_and_flop_conventions(tmp_path):
  steps = plan_lib.load(T5_TABLE2, 'tiny', 1, str(tmp_path), budget='steps')
  budget_lib.match_budget(steps)
  assert {row['steps'] for c, row in steps.budget.items() if c not in steps.controls} == {240}
  assert steps.budget['decoder_lm']['budget_ratio'] > 1.2    # reported, not refused
  kaplan = plan_lib.load(T5_TABLE2, 'tiny', 1, str(tmp_path), flops='6n')
  budget_lib.match_budget(kaplan)
  matmul = plan_lib.load(T5_TABLE2, 'tiny', 1, str(tmp_path))
  budget_lib.match_budget(matmul)
  # the issue's figures (equal steps 240, matmul count 189, Kaplan's 6N 280) for the 160-token
  # stream; the decoder's stream is 161 now (the encoder-decoder's two streams + 1: same cut)
  assert (matmul.budget['decoder_lm']['steps'], kaplan.budget['decoder_lm']['steps']) == (187, 278)
  row = matmul.budget['decoder_lm']
  assert set(row['flops']) == {'matmul', '6n', '6n_attn'}
  assert row['flops']['matmul'] == row['train_flops']
  assert row['flops']['6n'] < row['flops']['6n_attn'] < row['flops']['matmul']


def test_logits_warning_is_one_line_per_cell(tmp_path, capsys):
  code, out, _ = _main([T5_TABLE2, '--workdir', str(tmp_path), '--list'], capsys)
  warned = [line for line in out.splitlines() if line.startswith('warning:')]
  # the decoder-only cells (36% in the logits; 48% and 28% at widths 64 and 192)
  assert code == 0 and len(warned) == 6 and all('matmul' in line for line in warned)
  shares = {line.split(':')[1].strip(): line.split('are ')[1].split('%')[0] for line in warned}
  assert shares == {'decoder_denoise': '36', 'decoder_lm': '36', 'prefix_denoise': '36',
                    'prefix_lm': '36', 'decoder_lm@xs': '48', 'decoder_lm@m': '28'}


def test_flop_conventions_by_hand():
  c = common.base_config()
  c.model = common.model_config(family='decoder', vocab_size=32, num_layers=1, d_model=8,
                                num_heads=2, head_dim=4, d_ff=16, max_len=16, use_bias=False)
  c.data.seq_len = 10
  # per token: q, k, v, out 4 x 8 x 8 = 256 weights; MLP 2 x 8 x 16 = 256 weights;
  # scores QK^T + AV over 10 keys: 2 x 2 x 10 x (2 heads x 4) = 320; logits 2 x 8 x 32 = 512
  assert accounting.train_flops_per_token(c, 'matmul') == 3 * (512 + 512 + 320 + 512)
  assert accounting.train_flops_per_token(c, '6n') == 6 * (256 + 256)
  assert accounting.train_flops_per_token(c, '6n_attn') == 6 * (256 + 256) + 3 * 320
  counts = accounting.count_params(accounting.abstract_model(c))
  assert counts['decoder/attention'] + counts['decoder/mlp'] == 512   # the N of 6N
  with pytest.raises(ValueError, match='palm'):
    accounting.train_flops_per_token(c, 'palm')


@pytest.mark.parametrize('scale', ['small', 'base'])
def test_model_vocabulary_is_the_shared_tokenizers(tmp_path, scale):
  plan = plan_lib.load(T5_TABLE2, scale, 1, str(tmp_path))
  assert {o['model.vocab_size'] for o in plan.cells.values()} == {8192}
  budget_lib.match_budget(plan)
  if scale == 'small':   # the issue's figures: 48.3M, not 60.5M; the decoder 63,448 steps
    assert plan.budget['encdec_denoise']['params'] == 48_251_392
    assert plan.budget['decoder_lm']['steps'] == 63_332   # 63,448 for a 626-token stream; 627
  runs = plan_lib.finetune_runs(plan)
  assert {r['model.vocab_size'] for r in runs} == {8192}


def test_vocabulary_rounds_up_and_an_oversized_pinned_one_is_refused(tmp_path, capsys):
  plan = plan_lib.load(T5_TABLE2, 'tiny', 1, str(tmp_path), {'data.vocab_size': 2000})
  assert plan.cells['encdec_denoise']['model.vocab_size'] == 2048
  code, _, err = _main([T5_TABLE2, '--workdir', str(tmp_path), '--list', '--scale', 'small',
                        '--config.model.vocab_size=32128'], capsys)
  assert code == 2 and err.count('\n') == 1, err
  assert '`model.vocab_size=32128`' in err and '8192-piece' in err and 'encdec_denoise' in err
  assert not os.path.exists(tmp_path / 'compare_t5_table2')


def test_table_names_the_convention_and_has_every_count(tmp_path):
  plan = plan_lib.load(_write(tmp_path), 'tiny', 1, str(tmp_path), budget='steps', flops='6n')
  budget_lib.match_budget(plan)
  plan_lib.finetune_runs(plan)
  results.write(plan)
  text = open(os.path.join(plan.exp_dir, 'comparison.md')).read()
  header = text.splitlines()[0]
  assert 'equal steps' in header and 'FLOPs counted as 6n' in header
  assert '| pretrain steps | cost | FLOPs matmul | FLOPs 6n | FLOPs 6n_attn |' in text
  with open(os.path.join(plan.exp_dir, 'comparison.csv')) as f:
    row = next(csv.DictReader(f))
  assert float(row['flops_6n']) == plan.budget[row['cell']]['flops']['6n']
  assert row['steps'] == '4' and row['cost'] == '1.0' and row['flops_matmul']


def test_slurm_arrays_carry_the_budget_and_convention(tmp_path, capsys):
  path = _write(tmp_path)
  code, _, err = _main([path, '--workdir', str(tmp_path), '--slurm', '--budget', 'steps',
                        '--flops', '6n_attn', '--allow_mismatch'], capsys)
  assert code == 0, err
  assert '--budget steps --flops 6n_attn' in (tmp_path / 'two' / 'pretrain.sbatch').read_text()
  assert compare.main is not None
