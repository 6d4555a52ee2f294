"""Plan mode: slice names, reading a compiled program (collectives with loop counts, the
compiler's out-of-memory refusal), the fit verdict, and the entry point compiling a tiny run for
a TPU topology on this CPU host (skipped, with the reason, where libtpu is not installed)."""

import importlib.util
import os

import pytest

from transformer import config as config_lib
from transformer import plan
from transformer.errors import ConfigError
from transformer.monitoring import compiled
from transformer.training import plan_text, planning, topologies

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason='libtpu not installed (requirements-test.txt has it)')
TINY = ['--config', 'configs/gpt2.py:tiny', '--config.train.batch_size=8',
        '--config.data.seq_len=32', '--config.model.num_layers=1']

# A while loop running 12 times around an all-gather, beside a reduce-scatter in the entry.
HLO = """HloModule m

%cond (p: (s32[], f32[4])) -> pred[] {
  %p = (s32[], f32[4]) parameter(0)
  %c = s32[] constant(12)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%body (p.1: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p.1 = (s32[], f32[4]) parameter(0)
  %ag = bf16[8,128]{1,0} all-gather(%x), channel_id=1, replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, dimensions={0}, metadata={op_name="jit(step)/while/body/dot_general"}
  ROOT %t = (s32[], f32[4]) tuple(%i, %y)
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %rs = f32[16,32]{1,0} reduce-scatter(%a), channel_id=2, replica_groups={{0,1,2,3}}, dimensions={0}
  %w = (s32[], f32[4]) while(%t0), condition=%cond, body=%body
  %cp = (f32[2,2]{1,0}, f32[2,2]{1,0}, u32[], u32[]) collective-permute-start(%a), channel_id=3
  ROOT %r = f32[4] get-tuple-element(%w), index=1
}
"""


def test_slice_names_map_to_topologies_and_chips():
  s = topologies.get('v5e-8')
  assert (s.chips, s.topology, s.chips_per_host_bounds) == (8, '2x4', (2, 4, 1))
  assert topologies.get('v5litepod-16').topology == '4x4'
  assert topologies.get('v5p-8').chips == 4 and topologies.get('v4-8').chip.chip_config == 'megacore'
  assert topologies.get('v6e-256').chips_per_host_bounds == (2, 2, 1)
  assert s.chip.hbm_bytes == 16 * 2 ** 30 and s.chip.peak_bf16 == 197e12
  with pytest.raises(ConfigError, match=r'`--topology v5e-6`: not a known TPU slice; .*v5e-8'):
    topologies.get('v5e-6')


def test_collectives_count_loop_iterations_and_reduce_scatter_inputs():
  found = {c.name: c for c in compiled.collectives(HLO)}
  assert found['%ag'].count == 12 and found['%ag'].bytes == 8 * 128 * 2
  assert found['%ag'].op == 'jit(step)/while/body/dot_general'
  assert found['%rs'].count == 1 and found['%rs'].bytes == 4 * 16 * 32 * 4   # group of 4
  assert found['%cp'].kind == 'collective-permute' and found['%cp'].bytes == 16
  assert compiled.by_kind(found.values())['all-gather'] == (12, 12 * 2048)


def test_the_compilers_refusal_is_read():
  msg = ('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO '
         'temporaries (24.81G) exceeds available HBM (15.75G).')
  assert compiled.out_of_memory(msg) == {'temp': int(24.81 * 2 ** 30),
                                         'limit': int(15.75 * 2 ** 30)}
  assert compiled.out_of_memory('INVALID_ARGUMENT: something else') is None


def _report(total_gib, fits=True):
  mem = compiled.Memory(argument=0, output=0, alias=0, temp=int(total_gib * 2 ** 30))
  return planning.Report(hbm=16 * 2 ** 30, state=0, memory=mem if fits else None,
                         refused=None if fits else {'temp': int(total_gib * 2 ** 30),
                                                    'limit': int(15.75 * 2 ** 30)},
                         flops=1e12, peak=1e12, bandwidth=1e9, bytes_moved=1e8)


def test_the_verdict_names_the_overshoot_and_the_smallest_listed_change_that_fits():
  keys = ['model.remat', 'train.batch_size']
  rows = [(('none', '32'), _report(29.9, fits=False)), (('dots', '32'), _report(10.5)),
          (('none', '16'), _report(15.0, fits=False)), (('full', '16'), _report(5.7))]
  line = plan_text.smallest_change(keys, rows)
  assert line == ('model.remat=none train.batch_size=32 does not fit: 29.90 GiB per chip, '
                  '14.15 GiB over the 15.75 GiB the compiler allows; smallest listed change '
                  'that fits: model.remat=dots (10.50 GiB)')
  assert plan_text.smallest_change(keys, rows[1:2]) == 'model.remat=dots train.batch_size=32: fits'
  assert 'no listed combination fits' in plan_text.smallest_change(keys, rows[:1])
  assert 'NO' in plan_text.try_table(keys, rows)[1] and 'yes' in plan_text.try_table(keys, rows)[2]


def test_try_lists_every_combination_in_order_and_refuses_bad_items():
  keys, combos = plan.parse_tries(['model.remat=none,dots', 'train.batch_size=8,16'])
  assert keys == ['model.remat', 'train.batch_size']
  assert combos == [('none', '8'), ('none', '16'), ('dots', '8'), ('dots', '16')]
  for bad in ('model.remat', 'model.remat='):
    with pytest.raises(ConfigError, match=f'`--try {bad}`: write KEY=V1,V2'):
      plan.parse_tries([bad])


def test_a_bad_topology_or_try_value_is_one_line_before_compiling(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert plan.main([*TINY, '--topology', 'v9-8']) == 2
  assert capsys.readouterr().err.count('\n') == 1
  assert plan.main([*TINY, '--topology', 'v5e-4', '--try', 'model.remat=none,sometimes']) == 2
  assert capsys.readouterr().err == ("error: `model.remat='sometimes'`: choose one of none, "
                                     'dots, full\n')
  assert os.listdir(tmp_path) == []


@needs_libtpu
def test_plan_prints_the_per_chip_table_for_a_tpu_slice(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert plan.main([*TINY, '--topology', 'v5e-4', '--config.mesh.preset=fsdp',
                    '--config.mesh.shape=(1,-1,1)']) == 0
  out = capsys.readouterr().out
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in out and '4 x v5e' in out
  assert 'attention xla (auto: not splash, sequence length 32 is not a multiple of 128' in out
  for line in ('parameters + optimizer state', 'temporaries', 'of 16.00 GiB HBM: fits',
               'ESTIMATES', 'max(FLOPs/chip / peak, bytes/chip / HBM bandwidth)',
               '(FLOPs/chip / peak) / step time', 'all-gather'):
    assert line in out, line
  assert out.rstrip().splitlines()[-1].startswith('fits: ')
  assert os.listdir(tmp_path) == []   # plan writes nothing


@needs_libtpu
@pytest.mark.slow   # plan mode end to end over two slices (test_tpu_compile.py compiles a 2-slice step by default)
def test_plan_compiles_for_two_slices_with_the_data_axis_across_them(capsys):
  assert plan.main([*TINY, '--topology', 'v5e-4', '--num_slices', '2',
                    '--config.mesh.shape=(2,-1,1)', '--config.mesh.preset=fsdp']) == 0
  out = capsys.readouterr().out
  assert "on 2 x v5e-4 (8 x v5e" in out and "mesh {'data': 2, 'fsdp': 4, 'tensor': 1}" in out
  assert 'all-reduce over DCN' in out   # gradients summed across the slices


@needs_libtpu
def test_the_batch_arrives_in_the_layout_its_rule_asks_for():
  """A 'batch' rule over data only on a (2, 2, 1) mesh: the batch is built and declared split
  over data, so the step spends no collective laying it out (it gathered each batch array over
  fsdp when batches were always loaded over data x fsdp)."""
  slice_ = topologies.get('v5e-4')
  config = config_lib.load('configs/gpt2.py:tiny', {
      'train.batch_size': '8', 'data.seq_len': '32', 'model.num_layers': '1',
      'mesh.preset': 'fsdp', 'mesh.shape': '(2,2,1)', 'mesh.rules': "(('batch', 'data'),)"})
  report = planning.plan(config, 'runs', topologies.devices(slice_), slice_.chip)
  on_batch = [c for c in report.collectives if c.shape.startswith('s32') or
              'sharding_constraint' in c.op]
  assert not on_batch, on_batch
