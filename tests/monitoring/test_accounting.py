"""transformer.summary: every preset of every config file summarises quickly (shapes only), and
the FLOP split matches a hand computation."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest
from flax import nnx

from configs import common
from transformer import config as config_lib
from transformer import models
from transformer.monitoring import accounting as summary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _presets():
  out = []
  for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))):
    spec = importlib.util.spec_from_file_location('_cfg', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for size in getattr(module, 'SIZES', {}):
      out.append(f'configs/{os.path.basename(path)}:{size}')
  return out


PRESETS = _presets()


def test_every_config_file_has_presets():
  families = {p.split(':')[0] for p in PRESETS}
  assert {'configs/gpt2.py', 'configs/bert.py', 'configs/t5.py', 'configs/bart.py',
          'configs/transformer.py'} <= families


@pytest.mark.parametrize('preset', PRESETS)
def test_summary_runs_for_every_preset(preset):
  config = config_lib.load(preset)
  counts = summary.count_params(summary.abstract_model(config))  # shapes only: no allocation
  text = summary.format_table(config, param_counts=counts)
  assert f'{counts["total"]:,}' in text and 'total_train' in text and 'remat=full' in text
  assert counts['total'] == sum(v for k, v in counts.items() if k not in ('total',
                                                                           'non_embedding'))
  assert 0 < counts['non_embedding'] < counts['total']
  flops = summary.flops_per_token(config)
  assert flops['total_forward'] == pytest.approx(
      flops['attention_projections'] + flops['attention_scores'] + flops['mlp'] + flops['logits'])
  bytes_none = summary.activation_bytes_per_token(config, 'none')
  assert bytes_none > summary.activation_bytes_per_token(config, 'dots') > (
      summary.activation_bytes_per_token(config, 'full')) > 0


def _tiny_decoder():
  c = common.base_config()
  c.model = common.model_config(family='decoder', vocab_size=31, num_layers=2, d_model=32,
                                num_heads=4, d_ff=64, max_len=16)
  c.data.seq_len = 16
  return c


def test_flops_split_by_hand():
  flops = summary.flops_per_token(_tiny_decoder())
  # Per token and layer: q, k, v, out projections 4 * 2 * 32 * 32 = 8192; scores QK^T + AV over
  # 16 keys: 2 * 2 * 16 * (4 heads * 8) = 2048; MLP 2 * 2 * 32 * 64 = 8192. Two layers.
  # Logits once: 2 * 32 * 31 = 1984.
  assert flops['attention_projections'] == 2 * 8192
  assert flops['attention_scores'] == 2 * 2048
  assert flops['attention'] == 2 * (8192 + 2048)
  assert flops['mlp'] == 2 * 8192
  assert flops['logits'] == 1984
  assert flops['total_forward'] == 16384 + 4096 + 16384 + 1984
  assert flops['total_train'] == 3 * flops['total_forward']
  assert flops['train_6n'] == 6 * (2 * 4 * 32 * 32 + 2 * 2 * 32 * 64)  # 6 x matmul weights
  assert flops['tokens_per_example'] == 16


def test_flops_variants_by_hand():
  c = _tiny_decoder()
  base = summary.flops_per_token(c)
  c.model.activation = 'swiglu'  # a third d_model x d_ff matrix
  assert summary.flops_per_token(c)['mlp'] == 1.5 * base['mlp']
  c.model.num_kv_heads = 1  # k and v shrink from 4 heads to 1
  assert summary.flops_per_token(c)['attention_projections'] == 2 * 2 * 32 * (8 * 4 * 2 + 8 * 2)
  c.data.seq_len = 8  # scores are linear in the key length
  assert summary.flops_per_token(c)['attention_scores'] == base['attention_scores'] / 2


def test_encoder_decoder_flops_by_hand():
  c = _tiny_decoder()
  c.model.family = 'encoder_decoder'
  c.model.num_layers = 1
  c.data.seq_len, c.data.targets_len = 12, 4
  flops = summary.flops_per_token(c)
  d, hn = 32, 32
  enc = 12 * (8 * d * hn + 4 * hn * 12 + 4 * d * 64)  # per example, 12 input tokens
  dec = 4 * (8 * d * hn + 4 * hn * 4 + 4 * d * 64)  # self-attention + MLP, 4 target tokens
  cross = 4 * (4 * d * hn + 4 * hn * 12) + 12 * 4 * d * hn  # q/out + scores; k/v per input token
  logits = 4 * 2 * d * 31
  assert flops['total_forward'] * 4 == enc + dec + cross + logits
  assert flops['tokens_per_example'] == 4


def test_count_params_groups_match_real_model():
  c = _tiny_decoder()
  c.model.family = 'encoder_decoder'
  c.model.tie_embeddings = False
  model = models.build(c.model, rngs=nnx.Rngs(0))
  counts = summary.count_params(model)
  assert counts == summary.count_params(summary.abstract_model(c))
  d, f, v, max_len = 32, 64, 31, 16
  attention = 4 * (d * d + d)
  assert counts['embeddings'] == v * d + 2 * max_len * d
  assert counts['encoder/attention'] == 2 * attention
  assert counts['decoder/attention'] == 2 * attention
  assert counts['decoder/cross_attention'] == 2 * attention
  assert counts['encoder/mlp'] == counts['decoder/mlp'] == 2 * (2 * d * f + f + d)
  assert counts['head'] == d * v
  assert counts['non_embedding'] == counts['total'] - counts['embeddings']


def test_activation_bytes_korthikanti():
  """With bf16, dropout and d_ff = 4 d the attention and norm terms are the paper's
  11 h + 5 a s and 4 h bytes per token per layer; the MLP is 19 h plus our inner dropout mask."""
  c = _tiny_decoder()
  c.model.update(dtype='bfloat16', dropout_rate=0.1, attention_dropout_rate=0.1, d_ff=128)
  h, a, s = 32, 4, 16
  per_layer = summary.activation_bytes(c)['none']['decoder']
  assert per_layer == 11 * h + 5 * a * s + 4 * h + 19 * h + 4 * h
  assert summary.activation_bytes(c)['full']['decoder'] == 2 * h
  assert summary.activation_bytes_per_token(c, 'full') == 2 * 2 * h  # two layers
  c.model.remat = 'full'
  assert summary.activation_bytes_per_token(c) == 2 * 2 * h


def test_cli_overrides_and_errors():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  run = lambda *args: subprocess.run([sys.executable, '-m', 'transformer.summary', *args],
                                     cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=120)
  ok = run('--config', 'configs/gpt2.py:tiny', '--config.model.num_layers=3',
           '--config.data.vocab_size=100')
  assert ok.returncode == 0, ok.stderr
  counts = summary.count_params(summary.abstract_model(config_lib.load(
      'configs/gpt2.py:tiny', {'model.num_layers': '3', 'data.vocab_size': '100'})))
  assert f'{counts["total"]:,}' in ok.stdout
  bad = run('--config', 'configs/gpt2.py:tiny', '--config.model.num_layerz=3')
  assert bad.returncode == 2 and 'model.num_layerz' in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1
