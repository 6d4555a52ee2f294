"""A training step with the architecture knobs on, sharded over 8 fake CPU devices, equals the
same step on one device (a subprocess: tests/models/knobs_parity.py), with the tolerances of
tests/e2e/test_sharding.py. The decoder turns every knob on at once, its layers scanned with an
interleaved local/global pattern (the window a scanned input), heads split over 'tensor', and a
mixture of experts every other layer, its experts split over 'data' on a mesh of its own; the
z-loss is reported as a metric of its own (train/z_loss in TensorBoard), the MoE aux loss too."""

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.test_sharding import assert_parity

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'knobs_parity.py')
ALL_KNOBS = ('model.positions=alibi', 'model.qk_norm=rmsnorm', 'model.attention_softcap=5.0',
             'model.local_window=8', 'model.attention_pattern=1:1', 'model.parallel_block=true',
             'model.logit_softcap=10.0', 'train.z_loss=1e-3')


def _parity(family, meshes, out_dir, *overrides):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
  proc = subprocess.run([sys.executable, SCRIPT, family, '2', meshes, out_dir, *overrides],
                        env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


MOE = ('model.moe_experts=8', 'model.moe_top_k=2', 'model.moe_capacity_factor=1.0',
       'model.moe_shared_experts=1')


@pytest.mark.slow   # a subprocess on 8 fake devices, ~30 s
def test_decoder_with_every_knob_sharded_equals_one_device(tmp_path):
  """Also a mixture of experts every other layer (the scanned unit a local MoE layer after a
  global dense one; capacity 1.0 drops tokens, the same ones), under 'expert4_tensor2' too:
  expert parallelism, the 8 experts' weights split 4 ways over 'data' (as is the batch), their
  hidden dimension 2 ways over 'tensor'."""
  result = _parity('decoder', 'single,data2_tensor4,expert4_tensor2', str(tmp_path), *ALL_KNOBS,
                   *MOE, 'model.num_layers=2', 'model.scan_layers=true', 'model.moe_every=2')
  assert_parity(result, 'decoder', str(tmp_path))
  assert all(r['z_losses'][0] > 0 for r in result.values())
  for got in result.values():
    assert got['aux_losses'][0] > 0
    assert got['aux_losses'] == pytest.approx(result['single']['aux_losses'], rel=1e-5)


@pytest.mark.slow
def test_moe_encoder_decoder_sharded_equals_one_device(tmp_path):
  result = _parity('encoder_decoder', 'single,expert4_tensor2', str(tmp_path), *MOE,
                   'model.moe_capacity_factor=0.0')   # dropless: ragged_dot, experts split
  assert_parity(result, 'encoder_decoder', str(tmp_path))


@pytest.mark.slow
def test_encoder_decoder_with_the_knobs_sharded_equals_one_device(tmp_path):
  result = _parity('encoder_decoder', 'single,fsdp2_tensor4', str(tmp_path), *ALL_KNOBS)
  assert_parity(result, 'encoder_decoder', str(tmp_path))
