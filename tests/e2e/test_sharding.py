"""Sharding: rules and their errors (in process), and training parity across meshes on 8 fake
CPU devices (in a subprocess, since XLA's device count is fixed when jax starts).

Parity tolerance (float32): losses and gradient norms agree to rtol 1e-5; parameters after the
steps agree to atol 2e-5. Measured over every family and mesh (3 AdamW steps at lr 1e-3): losses
within 2.6e-7 relative, gradient norms within 1.1e-7, parameters within 2.2e-6 absolute.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec

from transformer.training import sharding
from transformer.errors import ConfigError

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sharding_helper.py')
ALL_MESHES = 'single,data8,fsdp8,tensor4,data2_tensor4,fsdp2_tensor4'


def run_helper(*commands, devices=8, timeout=900):
  """Run sharding_helper.py commands in a fresh process with `devices` fake CPU devices."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
  argv = []
  for c in commands:
    argv += (['+'] if argv else []) + list(c)
  proc = subprocess.run([sys.executable, HELPER, *argv], env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_parity(result, family, out_dir):
  """Every mesh against 'single'; prints the largest differences (see them with pytest -s)."""
  base = result['single']
  ref = np.load(os.path.join(out_dir, f'{family}_single.npz'))
  for name, got in result.items():
    np.testing.assert_allclose(got['losses'], base['losses'], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(got['grad_norms'], base['grad_norms'], rtol=1e-5, err_msg=name)
    params = np.load(os.path.join(out_dir, f'{family}_{name}.npz'))
    assert set(params) == set(ref)
    for key in ref:
      np.testing.assert_allclose(params[key], ref[key], atol=2e-5, err_msg=f'{name} {key}')
    rel = lambda a, b: float(np.max(np.abs(np.subtract(a, b)) / np.abs(b)))
    print(f'{family} {name}: max rel diff loss {rel(got["losses"], base["losses"]):.1e}, '
          f'grad norm {rel(got["grad_norms"], base["grad_norms"]):.1e}; max abs diff params '
          f'{max(float(np.max(np.abs(params[k] - ref[k]))) for k in ref):.1e}')
  # The steps did train: otherwise equal losses would prove nothing.
  assert base['losses'][0] != base['losses'][-1]


# --- 8 fake devices, one subprocess for the default run -------------------------------------


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('parity'))
  results = run_helper(
      ('parity', 'decoder', '2', 'single,fsdp2_tensor4,data2_tensor4', out),
      ('memory',),
      ('error', 'mesh.rules=(("mlp", "tensor"), ("mlp", "fsdp"))'),
      ('error', 'mesh.rules=(("nothing", "tensor"),)'),
      ('error', 'mesh=tensor4', 'model.d_ff=66'),
      ('error', 'mesh=fsdp8', 'mesh.rules=(("mlp", "fsdp"),)'),
      ('error', 'mesh.shape=(3, 1, 1)'),
  )
  return out, results


def test_parity_decoder_across_meshes(quick):
  out, results = quick
  assert_parity(results[0], 'decoder', out)


def test_fsdp_splits_params_and_optimizer_state_eight_ways(quick):
  memory = quick[1][1]
  for part in ('params', 'opt_state'):
    most, total = memory[part]['max_device_bytes'], memory[part]['total_bytes']
    assert most <= 1.1 * total / 8, (part, most, total)
  table = memory['table']
  assert "token_embed/embedding" in table and "(None, 'fsdp')" in table


BATCH_RULES = [  # (mesh, mesh.rules, accumulation steps, rows per device of an 8-row batch)
    ('fsdp2_tensor4', '', '1', 4),                                  # default: over data x fsdp
    ('fsdp2_tensor4', "(('batch', 'data'),)", '1', 8),              # data is 1: every row
    ('data8', "(('batch', None),)", '1', 8),                        # replicated
    ('fsdp2_tensor4', "(('batch', ('data', 'fsdp', 'tensor')),)", '1', 1),
    ('fsdp2_tensor4', "(('batch', 'data'),)", '2', 4),              # 4-row micro-batches
    ('fsdp2_tensor4', '', '2', 2),                                  # were 4: not split at all
]


@pytest.fixture(scope='module')
def batch_rules():
  return run_helper(*[('batch_rule', mesh, rules, accumulation)
                      for mesh, rules, accumulation, _ in BATCH_RULES],
                    ('error', 'mesh=data8', "mesh.rules=(('batch', 'data'),)",
                     'opt.accumulation_steps=2'))


@pytest.mark.parametrize('i', range(len(BATCH_RULES)),
                         ids=[f'{m}-{r or "default"}-accum{a}' for m, r, a, _ in BATCH_RULES])
def test_a_batch_rule_decides_how_the_steps_split_the_batch(batch_rules, i):
  """mesh.rules for the logical axis 'batch' was printed and ignored: the loss always saw the
  batch split over (data, fsdp). Now the train and eval steps lay it out as the rule says, and
  the numbers do not change."""
  rows, default = BATCH_RULES[i][3], batch_rules[0]
  got = batch_rules[i]
  assert set(got['train_rows']) == {rows}, got['train_rows']
  if BATCH_RULES[i][2] == '1':
    assert set(got['eval_rows']) == {rows}, got['eval_rows']
  np.testing.assert_allclose(got['losses'], default['losses'], rtol=1e-5)
  np.testing.assert_allclose(got['eval_loss'], default['eval_loss'], rtol=1e-5)


def test_a_batch_rule_that_cannot_split_a_micro_batch_is_refused(batch_rules):
  message = batch_rules[-1]['error']
  assert message and "('batch', 'data')" in message and 'opt.accumulation_steps=2' in message
  assert '4 rows' in message and '8 devices' in message and '\n' not in message, message


def test_config_errors_name_the_problem(quick):
  errors = [r['error'] for r in quick[1][2:]]
  assert 'maps logical axis \'mlp\' twice' in errors[0]
  assert 'matches no parameter' in errors[1] and 'nothing' in errors[1]
  assert errors[2].startswith('decoder/layers/0/mlp/wi/') and 'mlp=66' in errors[2]
  assert 'split 4 ways' in errors[2]
  assert 'use one mesh axis twice' in errors[3] and 'mlp/wi/kernel' in errors[3]
  assert '(3, 1, 1)' in errors[4] and '3 devices but there are 1' in errors[4]


@pytest.mark.slow
@pytest.mark.parametrize('family', ['decoder', 'encoder', 'encoder_decoder'])
def test_parity_every_family_every_mesh(family, tmp_path):
  result = run_helper(('parity', family, '3', ALL_MESHES, str(tmp_path)))[0]
  assert_parity(result, family, str(tmp_path))


@pytest.mark.slow
def test_checkpoint_from_fsdp8_restores_under_data2(tmp_path):
  ckpt = str(tmp_path / 'ckpt')
  saved = run_helper(('save', ckpt), devices=8)[0]
  restored = run_helper(('restore', ckpt), devices=2)[0]
  assert saved['devices'] == 8 and restored['devices'] == 2
  assert any('fsdp' in s for s in saved['specs'])
  assert all('fsdp' not in s for s in restored['specs'])
  np.testing.assert_allclose(restored['losses'], saved['losses'], rtol=1e-5)


# --- rules, in process (one device) ---------------------------------------------------------


def test_extra_rule_overrides_preset():
  table = dict(sharding.rules('fsdp', [('mlp', 'tensor'), ('embed', None)]))
  assert table['mlp'] == 'tensor' and table['embed'] is None
  assert table['batch'] == ('data', 'fsdp')


@pytest.mark.parametrize('extra, message', [
    ([('mlp', 'tensor'), ('mlp', 'fsdp')], "maps logical axis 'mlp' twice"),
    ([('mlp', 'model')], "'model' is not a mesh axis"),
    ([('mlp',)], 'is not a (logical_axis, mesh_axis) pair'),
])
def test_bad_rules_raise(extra, message):
  with pytest.raises(ConfigError, match='mesh.rules') as e:
    sharding.rules('data', extra)
  assert message in str(e.value)


def test_unknown_preset_raises():
  with pytest.raises(ConfigError, match='mesh.preset'):
    sharding.rules('pipeline')


def test_logical_to_spec():
  assert sharding.logical_to_spec(('embed', 'mlp'), 'fsdp_tensor') == PartitionSpec('fsdp', 'tensor')
  assert sharding.logical_to_spec(('layers', 'embed'), 'data') == PartitionSpec(None, None)
  with pytest.raises(ConfigError, match='p/kernel: .* use one mesh axis twice'):
    sharding.logical_to_spec(('embed', 'mlp'), sharding.rules('fsdp', [('mlp', 'fsdp')]),
                             'p/kernel')


@pytest.mark.parametrize('shape, count, expected', [
    ((-1, 1, 1), 8, (8, 1, 1)), ((2, -1, 2), 8, (2, 2, 2)), ((1, 1, 4), 4, (1, 1, 4))])
def test_mesh_shape_fills_minus_one(shape, count, expected):
  assert sharding.mesh_shape(shape, count) == expected


@pytest.mark.parametrize('shape, count, message', [
    ((3, -1, 1), 8, 'cannot be filled from 8 devices'),
    ((2, 2, 1), 8, 'needs 4 devices but there are 8'),
    ((-1, -1, 1), 8, 'at most one of them -1'),
    ((0, 1, 1), 8, 'positive sizes'),
])
def test_impossible_mesh_shapes(shape, count, message):
  with pytest.raises(ConfigError, match='mesh.shape') as e:
    sharding.mesh_shape(shape, count)
  assert message in str(e.value)


# --- mesh.rules from the command line ---------------------------------------------------------


def test_mesh_rules_from_the_command_line():
  from transformer import cli  # pylint: disable=import-outside-toplevel
  _, config = cli.parse(['--config.mesh.rules=((\'mlp\', \'tensor\'), (\'embed\', None))',
                         '--config.mesh.shape=(2, 1, -1)'])
  assert config.mesh.rules == (('mlp', 'tensor'), ('embed', None))
  assert tuple(config.mesh.shape) == (2, 1, -1)
  assert dict(sharding.config_rules(config.mesh))['mlp'] == 'tensor'
  _, config = cli.parse(['--config.mesh.shape=1,2,4'])   # the plain comma form still works
  assert tuple(config.mesh.shape) == (1, 2, 4)


@pytest.mark.parametrize('value, message', [
    ("(('mlp', 'tensor'), ('mlp', 'fsdp'))", "maps logical axis 'mlp' twice"),
    ("(('mlp', 'model'),)", "'model' is not a mesh axis"),
    ('mlp,tensor', 'is not a (logical_axis, mesh_axis) pair'),
])
def test_bad_mesh_rules_on_the_command_line_exit_with_one_line(value, message, capsys):
  from transformer import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as e:
    cli.parse([f'--config.mesh.rules={value}'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and '\n' not in err and 'mesh.rules' in err and message in err, err


def test_mesh_shape_of_the_wrong_type_names_the_key(capsys):
  from transformer import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit):
    cli.parse(['--config.mesh.shape=(2.5, 1, 1)'])
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: --config.mesh.shape=') and 'expected a tuple' in err, err
