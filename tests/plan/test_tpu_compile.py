"""CI compiles for TPU: the tiny train step of every family x objective, AOT-compiled for a
v5e:2x2 slice (4 chips) on this CPU host, under the data, fsdp and tensor presets, and one
2-slice mesh. Skipped, with the reason, where libtpu is not installed.

The full product (8 family x objective pairs x 3 presets) is 24 compiles; to keep the test runs
short this covers every pair once and every preset on every family (13 compiles + the 2-slice
one; BART's and the Transformer's, the two slowest, in the slow run), and checks the splash kernel is in the compiled step exactly where 'auto' must
take it (everywhere but T5's relative bias, attention dropout and 64-token targets):

  encoder          mlm (data, tensor), classification (fsdp)
  decoder          causal_lm (data, fsdp, tensor), prefix_lm (tensor), seq2seq (fsdp),
                   classification (data), causal_lm with attention dropout (data)
  encoder_decoder  span_corruption: T5 (data), BART (tensor); seq2seq: Transformer (fsdp)
  two slices       causal_lm, 2 x v5e-4, data over DCN x fsdp
"""

import functools
import importlib.util
import json
import re

import pytest

from transformer import config as config_lib
from transformer.monitoring import compiled
from transformer.training import planning, setup, topologies

pytestmark = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                reason='libtpu not installed (requirements-test.txt has it)')

SHAPES = {'train.batch_size': '8', 'data.seq_len': '128', 'train.steps': '10',
          'opt.warmup_steps': '1'}
PAIRS = {   # name -> (config, overrides)
    'encoder/mlm': ('configs/bert.py:tiny', {}),
    'encoder/classification': ('configs/bert.py:tiny', {'objective': 'classification'}),
    'decoder/causal_lm': ('configs/gpt2.py:tiny', {}),
    'decoder/prefix_lm': ('configs/gpt2.py:tiny', {'objective': 'prefix_lm'}),
    'decoder/seq2seq': ('configs/gpt2.py:tiny', {'objective': 'seq2seq',
                                                 'data.source': 'gettext_catalogs/en_de'}),
    'decoder/classification': ('configs/gpt2.py:tiny', {'objective': 'classification'}),
    't5/span_corruption': ('configs/t5.py:tiny', {}),
    'bart/span_corruption': ('configs/bart.py:tiny', {'data.targets_len': '128'}),
    'transformer/seq2seq': ('configs/transformer.py:tiny', {}),
    'decoder/causal_lm+attention_dropout': ('configs/gpt2.py:tiny',
                                            {'model.attention_dropout_rate': '0.1'}),
}
# 'auto' takes splash on TPU except for T5's relative-position bias, attention dropout and
# lengths it cannot tile (the Transformer's 64 targets).
NO_SPLASH = {'t5/span_corruption', 'transformer/seq2seq', 'decoder/causal_lm+attention_dropout'}
SPLASH_KERNEL = re.compile(r'splash_m[hq]a_fwd')
MESHES = {'data': '(-1,1,1)', 'fsdp': '(1,-1,1)', 'tensor': '(2,1,-1)'}   # BERT tiny: 2 heads
COVER = [('encoder/mlm', 'data'), ('encoder/mlm', 'tensor'), ('encoder/classification', 'fsdp'),
         ('decoder/causal_lm', 'data'), ('decoder/causal_lm', 'fsdp'),
         ('decoder/causal_lm', 'tensor'), ('decoder/prefix_lm', 'tensor'),
         ('decoder/seq2seq', 'fsdp'), ('decoder/classification', 'data'),
         ('t5/span_corruption', 'data'), ('bart/span_corruption', 'tensor'),
         ('transformer/seq2seq', 'fsdp'), ('decoder/causal_lm+attention_dropout', 'data')]


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
  """A jsonl: source of labelled texts for the classification pairs."""
  path = tmp_path_factory.mktemp('cls') / 'labelled.jsonl'
  words = 'the cat sat on a mat while dogs ran over green hills and rivers'.split()
  with open(path, 'w') as f:
    for i in range(200):
      text = ' '.join(words[(i + j) % len(words)] for j in range(6 + i % 9))
      f.write(json.dumps({'text': text, 'label': i % 2}) + '\n')
  return str(path)


@pytest.fixture(scope='module')
def compile_step(labelled):
  """compile_step(pair, preset, num_slices=1) -> (run, compiled HLO text), compiled once."""
  devices = functools.lru_cache()(lambda n: topologies.devices(topologies.get('v5e-4'), n))

  @functools.lru_cache()
  def compile_(pair, preset, num_slices=1):
    spec, extra = PAIRS[pair]
    overrides = {**SHAPES, **extra, 'mesh.preset': preset, 'mesh.shape': MESHES[preset]}
    if extra.get('objective') == 'classification':
      overrides.update({'data.source': f'jsonl:{labelled}', 'data.text_key': 'text',
                        'data.label_key': 'label', 'data.vocab_size': '256'})
    if num_slices > 1:
      overrides['mesh.shape'] = f'({num_slices},-1,1)'
    run = setup.prepare(config_lib.load(spec, overrides), 'runs', devices=devices(num_slices))
    state = run.trainer.abstract_state()
    return run, run.trainer.compile(state, planning.abstract_batch(run)).as_text()
  return compile_


# The two slowest compiles (18-34 s each on 2 CPU cores, measured) run with the slow tests.
SLOW = {('bart/span_corruption', 'tensor'), ('transformer/seq2seq', 'fsdp')}


@pytest.mark.parametrize('pair,preset', [
    pytest.param(p, m, id=f'{p}-{m}', marks=[pytest.mark.slow] if (p, m) in SLOW else [])
    for p, m in COVER])
def test_train_step_compiles_for_v5e_2x2(compile_step, pair, preset):
  run, hlo = compile_step(pair, preset)
  assert dict(run.mesh.shape)[preset] == (2 if preset == 'tensor' else 4)
  splash = pair not in NO_SPLASH
  assert run.trainer.attention[0] == ('splash' if splash else 'xla'), run.trainer.attention
  assert bool(SPLASH_KERNEL.search(hlo)) == splash
  assert 'num_partitions=4' in hlo


def test_train_step_compiles_for_two_slices(compile_step):
  run, hlo = compile_step('decoder/causal_lm', 'fsdp', 2)
  assert dict(run.mesh.shape) == {'data': 2, 'fsdp': 4, 'tensor': 1}
  assert {d.slice_index for d in run.mesh.devices[0].ravel()} == {0}   # data index 0: slice 0
  assert {d.slice_index for d in run.mesh.devices[1].ravel()} == {1}
  kinds = compiled.by_kind(compiled.collectives(hlo))
  assert 'all-reduce over DCN' in kinds   # gradients summed across the slices
