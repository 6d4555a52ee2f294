"""experiments/benchmark.py: tiny rows end to end, the JSON contract, and its input errors."""

import json

import pytest

from experiments import benchmark
from transformer.errors import ConfigError

# Tiny and quick: 2 timed steps on a 2 x 32 batch, the tests' 1024-piece tokenizer.
TINY = ['--sizes', 'tiny', '--steps', '2', '--warmup', '1', '--batch_size', '2', '--seq_len', '32',
        '--config.data.vocab_size=1024']
POSITIVE = ('params', 'batch', 'seq_len', 'init_s', 'compile_s', 'step_s', 'tokens_per_step',
            'output_tokens_per_step', 'tokens_per_s', 'flops_per_token', 'flops_per_step',
            'tflops_per_device', 'mfu',
            'peak_flops', 'memory_argument_bytes', 'memory_temp_bytes', 'memory_bytes',
            'device_count')
TEXT = ('family', 'config', 'size', 'dtype', 'peak_name', 'device_kind', 'jax_version')


def _run(tmp_path, families, capsys):
  out = tmp_path / 'results.json'
  assert benchmark.main(['--families', families, *TINY, '--out', str(out)]) == 0
  with open(out) as f:
    result = json.load(f)
  return result, capsys.readouterr().out


def _check_row(row, family):
  for key in POSITIVE:
    assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row[key])
  for key in TEXT:
    assert isinstance(row[key], str) and row[key], key
  assert row['family'] == family and row['size'] == 'tiny'
  assert row['batch'] == 2 and row['seq_len'] == 32 and row['dtype'] == 'float32'
  # The figures agree with each other.
  assert row['tokens_per_s'] == pytest.approx(row['tokens_per_step'] / row['step_s'])
  assert row['flops_per_step'] == pytest.approx(row['flops_per_token'] *
                                                row['output_tokens_per_step'])
  assert row['output_tokens_per_step'] <= row['tokens_per_step']
  assert row['mfu'] == pytest.approx(row['flops_per_step'] / row['step_s'] /
                                     (row['peak_flops'] * row['device_count']))
  assert 0 < row['tokens_per_step'] <= 2 * (32 + row['targets_len'])
  assert row['memory_bytes'] <= (row['memory_argument_bytes'] + row['memory_output_bytes'] +
                                 row['memory_temp_bytes'])


def test_decoder_tiny_row_and_table(tmp_path, capsys):
  result, text = _run(tmp_path, 'decoder', capsys)
  assert len(result['rows']) == 1
  _check_row(result['rows'][0], 'decoder')
  meta = result['meta']
  assert meta['peak_flops'] > 0 and meta['peak_name'] == result['rows'][0]['peak_name']
  assert len(meta['load_average_start']) == 3
  assert '| decoder | configs/gpt2.py:tiny |' in text
  assert meta['peak_name'] in text and 'Load average' in text


@pytest.mark.slow
def test_every_family_tiny(tmp_path, capsys):
  result, _ = _run(tmp_path, 'encoder,decoder,encoder_decoder', capsys)
  assert [r['family'] for r in result['rows']] == ['encoder', 'decoder', 'encoder_decoder']
  for row in result['rows']:
    _check_row(row, row['family'])
  t5 = result['rows'][2]
  assert t5['objective'] == 'span_corruption' and t5['targets_len'] == 8  # 32/128 of T5 tiny


@pytest.mark.parametrize('argv, names', [
    (['--mesh_presets', 'fsdp'], '--mesh_presets'),
    (['--families', 'rnn'], '--families'),
    (['--steps', '0'], '--steps'),
    (['--config.train.batch_size'], '--config.train.batch_size'),
    (['--sharding_presets', '--meshes', 'pipeline8'], '--meshes'),
])
def test_bad_flags_raise_one_line_config_errors(argv, names):
  with pytest.raises(ConfigError, match=names) as e:
    benchmark.parse_args(argv)
  assert '\n' not in str(e.value)


def test_unknown_size_and_key_name_the_fix(capsys):
  args, _ = benchmark.parse_args(['--sizes', 'huge'])
  with pytest.raises(ConfigError, match='tiny'):
    benchmark.family_config('decoder', 'huge', args, 'data', {})
  assert benchmark.main(['--families', 'decoder', '--sizes', 'tiny',
                         '--config.model.nope=1']) == 2
  assert 'model.nope' in capsys.readouterr().err


def test_size_alias_and_cpu_defaults():
  args, _ = benchmark.parse_args([])
  spec, config = benchmark.family_config('encoder', 'small', args, 'data', {})
  assert spec == 'configs/bert.py:base' and config.model.num_layers == 12
  assert config.train.batch_size == benchmark.CPU_BATCH   # tests run on CPU
  assert config.data.seq_len == benchmark.CPU_SEQ_LEN
  spec, config = benchmark.family_config('encoder_decoder', 'small', args, 'data',
                                         {'train.batch_size': '3'})
  assert config.train.batch_size == 3                     # the user's --config.* win
  assert config.data.targets_len == 29                    # ceil(128 * 114 / 512)


@pytest.mark.slow
def test_sharding_presets_on_eight_fake_devices(tmp_path, capfd):
  """--sharding_presets re-runs itself with 8 fake CPU devices and times each mesh; a mesh the
  model cannot use (BERT tiny's 2 heads over tensor=4) is listed as not run, not a failure."""
  out = tmp_path / 'presets.json'
  assert benchmark.main(['--sharding_presets', '--meshes', 'fsdp8,tensor4', '--families',
                         'decoder,encoder', '--steps', '1', '--warmup', '0', '--seq_len', '32',
                         '--config.data.vocab_size=1024', '--out', str(out)]) == 0
  with open(out) as f:
    result = json.load(f)
  text = capfd.readouterr().out
  assert result['meta']['device_count'] == 8 and result['meta']['sharding_presets']
  rows = {(r['family'], r['mesh']): r for r in result['rows']}
  assert set(rows) == {('decoder', 'fsdp8'), ('decoder', 'tensor4'), ('encoder', 'fsdp8')}
  assert rows['decoder', 'fsdp8']['mesh_shape'] == [1, 8, 1]
  assert rows['decoder', 'fsdp8']['device_count'] == 8
  assert rows['decoder', 'tensor4']['mesh_preset'] == 'tensor'
  assert rows['decoder', 'tensor4']['device_count'] == 4
  for row in rows.values():
    assert row['step_s'] > 0 and row['batch'] == 8 and row['seq_len'] == 32
  skipped = result['meta']['skipped']
  assert [(s['family'], s['mesh']) for s in skipped] == [('encoder', 'tensor4')]
  assert 'split 4 ways' in skipped[0]['reason']
  assert '| decoder | configs/gpt2.py:tiny | fsdp8 | 1 x 8 x 1 | fsdp |' in text
  assert 'Not run: encoder tiny on tensor4' in text


VS_TORCH_SMALL = ['--vs_torch', '--shapes', 'tiny', '--rounds', '1', '--steps', '1',
                  '--config.train.batch_size=2', '--config.data.seq_len=32',
                  '--config.data.vocab_size=1024']


def _vs_torch(tmp_path, argv):
  pytest.importorskip('torch')
  pytest.importorskip('transformers')
  out = tmp_path / 'vs_torch.json'
  assert benchmark.main([*argv, '--out', str(out)]) == 0
  with open(out) as f:
    return json.load(f)['rows']


def test_vs_torch_row_compares_the_same_batch(tmp_path, capsys):
  rows = _vs_torch(tmp_path, [*VS_TORCH_SMALL, '--families', 'decoder', '--threads', '2'])
  (row,) = rows
  assert row['peer'] == 'GPT2LMHeadModel' and row['threads'] == 2 and row['shape'] == 'tiny'
  assert row['batch'] == 2 and row['seq_len'] == 32
  assert len(row['ours_step_times']) == len(row['torch_step_times']) == 1
  assert row['ours_tokens_per_s'] == pytest.approx(row['tokens_per_step'] / row['ours_step_s'])
  assert row['torch_tokens_per_s'] == pytest.approx(row['slots_per_step'] / row['torch_step_s'])
  assert row['ratio'] == pytest.approx(row['ours_tokens_per_s'] / row['torch_tokens_per_s'])
  assert 0.9 < row['packing_efficiency'] <= 1 and 0 < row['mfu'] < 1
  # the ceiling: torch's step against our matrix products alone (a traced step's)
  assert 0 < row['ours_products_s'] < 2 * row['ours_step_s']
  assert row['ceiling_ratio'] == pytest.approx(
      (row['tokens_per_step'] / row['ours_products_s']) / row['torch_tokens_per_s'])
  assert '| decoder (GPT2LMHeadModel) | tiny | 2 |' in capsys.readouterr().out


@pytest.mark.slow
def test_vs_torch_every_family_and_one_pinned_thread(tmp_path):
  rows = _vs_torch(tmp_path, VS_TORCH_SMALL)
  assert [(r['family'], r['threads']) for r in rows] == [
      (f, t) for t in (2, 1) for f in ('encoder', 'decoder', 'encoder_decoder')]
  assert all(r['ratio'] > 0 for r in rows)


@pytest.mark.slow
def test_packing_rows(tmp_path):
  out = tmp_path / 'packing.json'
  assert benchmark.main(['--packing', '--seq_lens', '64', '--batches', '2', '--out',
                         str(out)]) == 0
  with open(out) as f:
    rows = json.load(f)['rows']
  modes = {(r['objective'], r['source']): r['mode'] for r in rows}
  assert modes[('causal_lm', 'python_stdlib/text')] == 'stream'
  assert modes[('seq2seq', 'gettext_catalogs/en_de')] == 'window'
  for r in rows:
    assert 0 < r['packing_efficiency'] <= 1
    if r['mode'] == 'window':
      assert r['packing_efficiency'] >= r['greedy_efficiency']


def test_the_logits_exist_once_and_their_gradient_once(tmp_path, capsys):
  """At 64 x 128 x 1024 the logits span two of the cross-entropy's forward chunks
  (kernels.CHUNK_ELEMENTS): the compiled step writes exactly two arrays of their size, the logits
  and their gradient (an unchunked forward writes two more)."""
  out = tmp_path / 'results.json'
  assert benchmark.main(['--families', 'decoder', '--sizes', 'tiny', '--steps', '1', '--warmup',
                         '0', '--batch_size', '64', '--seq_len', '128',
                         '--config.data.vocab_size=1024', '--out', str(out)]) == 0
  row = json.loads(out.read_text())['rows'][0]
  assert row['logits_bytes'] == 64 * 128 * 1024 * 4
  shapes = [b.split(' ', 1)[1] for b in row['logits_sized_buffers']]
  assert shapes == ['[8192, 1024]'] * 2, row['logits_sized_buffers']
  assert '| 2 |' in capsys.readouterr().out


def test_the_mlm_logits_exist_once_with_their_bias_and_their_gradient_once(tmp_path):
  """BERT's MLM decoder (tied, with a bias) at the masked positions: the product, the product
  plus bias and the gradient; the bias gradient reads that same gradient array (autodiff's
  reduction recomputed the gradient and the softmax under it: five arrays)."""
  out = tmp_path / 'results.json'
  assert benchmark.main(['--families', 'encoder', '--sizes', 'tiny', '--steps', '1', '--warmup',
                         '0', '--batch_size', '64', '--seq_len', '128',
                         '--config.data.vocab_size=1024', '--out', str(out)]) == 0
  row = json.loads(out.read_text())['rows'][0]
  assert len(row['logits_sized_buffers']) == 3, row['logits_sized_buffers']
