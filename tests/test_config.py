"""Values that pass the type check but cannot train as asked are refused before anything runs:
one line naming the key (through `config.load` and through the train CLI: exit 2, nothing
written). A warmup at least as long as the run gets one warning line."""

import os

import pytest

from transformer import config as config_lib
from transformer import train
from transformer.errors import ConfigError

BAD = [
    ('configs/gpt2.py:tiny', {'opt.learning_rate': 'nan'}, 'opt.learning_rate=nan'),
    ('configs/gpt2.py:tiny', {'opt.learning_rate': 'inf'}, 'opt.learning_rate=inf'),
    ('configs/gpt2.py:tiny', {'opt.learning_rate': '-inf'}, 'opt.learning_rate=-inf'),
    ('configs/gpt2.py:tiny', {'opt.weight_decay': 'nan'}, 'opt.weight_decay=nan'),
    ('configs/gpt2.py:tiny', {'opt.weight_decay': '-0.1'}, 'opt.weight_decay=-0.1'),
    ('configs/gpt2.py:tiny', {'opt.b2': '1.5'}, 'opt.b2=1.5'),
    ('configs/gpt2.py:tiny', {'opt.eps': '0'}, 'opt.eps=0.0'),
    ('configs/gpt2.py:tiny', {'opt.grad_clip_norm': 'inf'}, 'opt.grad_clip_norm=inf'),
    ('configs/gpt2.py:tiny', {'opt.end_lr_fraction': '2'}, 'opt.end_lr_fraction=2.0'),
    ('configs/gpt2.py:tiny', {'train.z_loss': 'nan'}, 'train.z_loss=nan'),
    ('configs/gpt2.py:tiny', {'model.num_kv_heads': '-2'}, 'model.num_kv_heads=-2'),
    ('configs/gpt2.py:tiny', {'model.num_kv_heads': '-4'}, 'model.num_kv_heads=-4'),
    ('configs/gpt2.py:tiny', {'model.head_dim': '-8'}, 'model.head_dim=-8'),
    ('configs/gpt2.py:tiny', {'model.max_len': '-1', 'model.positions': 'rotary'},
     'model.max_len=-1'),
    ('configs/gpt2.py:tiny', {'model.norm_eps': 'nan'}, 'model.norm_eps=nan'),
    ('configs/gpt2.py:tiny', {'model.init_std': '-0.02'}, 'model.init_std=-0.02'),
    ('configs/gpt2.py:tiny', {'model.positions': 'rotary', 'model.rotary_base': '0'},
     'model.rotary_base=0.0'),
    ('configs/t5.py:tiny', {'model.num_decoder_layers': '-1'}, 'model.num_decoder_layers=-1'),
    ('configs/t5.py:tiny', {'model.relative_buckets': '-4'}, 'model.relative_buckets=-4'),
    ('configs/t5.py:tiny', {'model.relative_max_distance': '0'}, 'model.relative_max_distance=0'),
    ('configs/bert.py:tiny', {'model.type_vocab_size': '-1'}, 'model.type_vocab_size=-1'),
]


@pytest.mark.parametrize('spec,overrides,needle', BAD, ids=[n for _, _, n in BAD])
def test_values_that_cannot_train_are_refused_by_load(spec, overrides, needle):
  with pytest.raises(ConfigError) as e:
    config_lib.load(spec, overrides)
  message = str(e.value)
  assert message.startswith(f'`{needle}`') and '\n' not in message and ';' in message, message


TINY = ['--config', 'configs/gpt2.py:tiny', '--config.model.num_layers=1',
        '--config.model.d_model=32', '--config.model.d_ff=64', '--config.data.seq_len=32',
        '--config.train.batch_size=4', '--config.log.samples=0']


@pytest.mark.parametrize('flag,needle', [
    ('--config.opt.learning_rate=nan', 'opt.learning_rate=nan'),
    ('--config.opt.learning_rate=inf', 'opt.learning_rate=inf'),
    ('--config.model.num_kv_heads=-2', 'model.num_kv_heads=-2'),
    ('--config.model.head_dim=-8', 'model.head_dim=-8'),
])
def test_the_train_cli_refuses_them_with_one_line(flag, needle, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train.main(TINY + [f'--workdir={tmp_path}', flag])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.startswith(f'error: `{needle}`') and '\n' not in err, err
  assert not os.listdir(tmp_path)


def _warnings(capsys):
  return [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning:')]


def test_warmup_not_shorter_than_the_run_gets_one_warning_line(capsys):
  capsys.readouterr()
  config_lib.load('configs/gpt2.py:tiny', {'train.steps': '50'})   # warmup 100 by default
  lines = _warnings(capsys)
  assert len(lines) == 1, lines
  assert 'opt.warmup_steps=100' in lines[0] and 'train.steps=50' in lines[0], lines[0]
  assert '49%' in lines[0] and '--config.opt.warmup_steps' in lines[0], lines[0]


def test_warmup_against_a_token_budget(capsys):
  capsys.readouterr()   # 32 sequences x 128 tokens a step: 40960 tokens are 10 steps
  config_lib.load('configs/gpt2.py:tiny', {'train.tokens': '40960', 'opt.warmup_steps': '10'})
  lines = _warnings(capsys)
  assert len(lines) == 1 and 'train.tokens=40960' in lines[0] and '10 steps' in lines[0], lines


@pytest.mark.parametrize('overrides', [
    {'train.steps': '101'},
    {'train.steps': '50', 'opt.warmup_steps': '0'},
    {'train.steps': '50', 'opt.schedule': 'constant_rsqrt'},  # a flat warmup peaks at once
])
def test_no_warning_when_the_warmup_ends_inside_the_run(overrides, capsys):
  capsys.readouterr()
  config_lib.load('configs/gpt2.py:tiny', overrides)
  assert not _warnings(capsys)


def test_the_cli_prints_the_warmup_warning(capsys):
  from transformer import cli  # pylint: disable=import-outside-toplevel
  capsys.readouterr()
  cli.parse(['--config', 'configs/gpt2.py:tiny', '--config.train.steps=20'])
  assert len(_warnings(capsys)) == 1


@pytest.mark.parametrize('spec', ['configs/gpt2.py:small', 'configs/bert.py:base',
                                  'configs/t5.py:base', 'configs/bart.py:base',
                                  'configs/transformer.py:base', 'configs/transformer.py:big'])
def test_published_configs_validate_without_warnings(spec, capsys):
  capsys.readouterr()
  config_lib.load(spec)
  assert not _warnings(capsys)


@pytest.mark.parametrize('spec,scan', [
    ('configs/gpt2.py:tiny', False), ('configs/gpt2.py:small', True),
    ('configs/bert.py:tiny', False), ('configs/bert.py:base', True),
    ('configs/t5.py:v1_1_tiny', False), ('configs/t5.py:base', True),
    ('configs/bart.py:large', True), ('configs/transformer.py:big', True)])
def test_sizes_above_tiny_scan_over_layers_unless_told(spec, scan):
  assert config_lib.load(spec).model.scan_layers is scan
  assert config_lib.load(spec, {'model.scan_layers': 'false'}).model.scan_layers is False


def test_an_entry_point_process_ends_as_the_interpreter_would(tmp_path):
  """cli.exit_process skips only the interpreter's final collection: the exit code, unflushed
  output, a non-daemon thread's work and atexit handlers all arrive."""
  import subprocess
  import sys
  done = tmp_path / 'atexit'
  script = (
      'import atexit, sys, threading, time\n'
      'from transformer import cli\n'
      f'atexit.register(lambda: open({str(done)!r}, "w").write("ran"))\n'
      'threading.Thread(target=lambda: (time.sleep(0.5), print("thread", flush=True))).start()\n'
      'sys.stdout.write("unflushed"); sys.stderr.write("err")\n'
      'cli.exit_process(3)\n')
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 3
  assert proc.stdout == 'unflushedthread\n' and proc.stderr == 'err'
  assert done.read_text() == 'ran'
