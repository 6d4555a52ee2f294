"""What a first run prints: no library start-up noise, one line each for data, model and mesh,
the progress, the end; the warnings that matter still show; the sharding table on request."""

import os
import subprocess
import sys

import pytest

from transformer import config as config_lib
from transformer.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {'model.num_layers': '1', 'model.d_model': '32', 'model.num_heads': '2',
        'model.d_ff': '64', 'data.seq_len': '32', 'data.vocab_size': '512',
        'data.tokenizer_train_examples': '2000', 'train.batch_size': '4', 'train.steps': '4',
        'train.log_every': '2', 'train.eval_every': '4', 'train.eval_steps': '1',
        'checkpoint.every': '4', 'checkpoint.async_save': 'false', 'log.samples': '1',
        'log.sample_length': '4'}
NOISE = ('oneDNN', 'InitializeLog', 'cpu_feature_guard', 'Downloading and preparing',
         'Variant folder', 'Generating', 'Shuffling', 'downloaded and prepared', '%|',
         'logical axes')


@pytest.mark.slow   # moved to the slow run to keep the default run under 15 minutes
def test_a_first_run_reads_well(tmp_path):
  """From nothing prepared: TFDS, TensorFlow and absl stay quiet; our lines come in order."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('TF_')}   # quiet.py's job
  env['TFDS_DATA_DIR'] = str(tmp_path / 'tfds')   # the corpus and tokenizer made from scratch
  argv = [sys.executable, '-m', 'transformer.train', '--config', 'configs/gpt2.py:tiny',
          '--workdir', str(tmp_path / 'runs'), '--config.opt.warmup_steps=100',
          *[f'--config.{k}={v}' for k, v in TINY.items()]]
  proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-3000:]
  lines = out.splitlines()
  assert not [l for l in lines if any(n in l for n in NOISE)], out
  # the warning that matters is still there, once
  assert sum(l.startswith('warning: `opt.warmup_steps=100`') for l in lines) == 1, out
  stdout = proc.stdout.splitlines()
  firsts = ['data   preparing python_stdlib/text', 'data   training a 512-piece',
            'data   python_stdlib/text: ', 'model  decoder, causal_lm: ', 'mesh   {',
            'Training ']
  where = [next(i for i, l in enumerate(stdout) if l.startswith(f)) for f in firsts]
  assert where == sorted(where) and where[-1] == len(firsts) - 1, stdout
  assert 'examples; tokenizer ' in stdout[2] and '% of token slots filled' in stdout[2]
  assert 'parameters' in stdout[3] and 'FLOPs/token' in stdout[3]
  assert '--show_sharding' in stdout[4]
  progress = [l for l in proc.stderr.splitlines() if l.startswith('step ')]
  assert [l.split(' ')[1] for l in progress] == ['2/4', '4/4'], proc.stderr
  assert 'step 4: eval/' in proc.stdout
  assert proc.stdout.rstrip().splitlines()[-3].startswith('Finished 4 steps (eval/')
  assert './launch.sh tensorboard ' in proc.stdout and 'checkpoints: ' in proc.stdout
  assert len(lines) < 20, out


def test_the_sharding_table_on_request(tmp_path, capsys):
  """(Without --show_sharding, one device prints no table: the first test's 'logical axes'.)"""
  config = config_lib.load('configs/gpt2.py:tiny', TINY)
  loop.train(config, str(tmp_path), dry_run=True, show_sharding=True)
  out = capsys.readouterr().out
  assert 'decoder/layers/0/self_attention/query/kernel' in out and 'mesh axes' in out


def test_model_line_says_which_attention_runs_and_why():
  from transformer.training import console
  from configs import common
  config = common.base_config()
  counts = {'total': 10, 'non_embedding': 5}
  line = console.model_line(config, counts, 1e6, ('xla', 'auto: no fused kernel on cpu'))
  assert line.endswith('FLOPs/token (train); attention xla (auto: no fused kernel on cpu)')
