"""Bad input to the training entry point: a one-line error naming the culprit, exit code 2, and
nothing lost (a workdir of another model is left untouched; a corrupt checkpoint is set aside and
training goes on from the one before it).
"""

import hashlib
import logging
import os
import shutil

import pytest

from transformer.training import checkpoint
from transformer import train

TINY = ['--config', 'configs/gpt2.py:tiny', '--config.model.num_layers=1',
        '--config.model.d_model=32', '--config.model.num_heads=2', '--config.model.d_ff=64',
        '--config.data.seq_len=32', '--config.data.vocab_size=1024',
        '--config.train.batch_size=4', '--config.train.eval_every=4', '--config.train.eval_steps=1',
        '--config.train.log_every=2', '--config.checkpoint.every=2',
        '--config.checkpoint.async_save=false', '--config.log.samples=0',
        '--config.log.attention_images=false']


def run_main(argv, capsys):
  """(exit code, stderr) of `train.main(argv)`; argument errors exit through SystemExit."""
  capsys.readouterr()
  try:
    code = train.main(argv)
  except SystemExit as e:
    code = e.code
  return code, capsys.readouterr().err


def assert_one_line_error(code, err, *names):
  assert code == 2, (code, err)
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert len(lines) == 1, err
  assert '\n' not in lines[0].strip()
  for name in names:
    assert name in lines[0], (name, lines[0])
  return lines[0]


@pytest.mark.parametrize('argv,names', [
    (['--config.train.stepz=3'], ['train.stepz']),
    (['--config.nosection.steps=3'], ['nosection']),
    (['--config.train.steps=ten'], ['train.steps', 'int', 'ten']),
    (['--config.data.pack=maybe'], ['data.pack', 'bool']),
    (['--config.train.steps'], ['--config.train.steps', 'value']),
    (['--bogus'], ['--bogus']),
    (['--config', 'configs/no_such_family.py:tiny'], ['configs/no_such_family.py']),
    (['--config', 'configs/gpt2.py:enormous'], ['enormous', 'tiny']),
    (['--config.checkpoint.init_from=/nonexistent/pretrained'],
     ['checkpoint.init_from', '/nonexistent/pretrained']),
    (['--config.opt.optimizer=sgd'], ['opt.optimizer', 'adamw']),
])
def test_argument_errors(argv, names, tmp_path, capsys):
  code, err = run_main(TINY + [f'--workdir={tmp_path}'] + argv, capsys)
  assert_one_line_error(code, err, *names)
  assert not os.listdir(tmp_path)      # rejected before anything was written


def test_missing_data_path(tmp_path, capsys):
  code, err = run_main(TINY + [f'--workdir={tmp_path}',
                               '--config.data.source=text:/nonexistent/*.txt'], capsys)
  assert_one_line_error(code, err, 'data.source', '/nonexistent/*.txt')


def test_objective_family_mismatch(tmp_path, capsys):
  code, err = run_main(TINY + [f'--workdir={tmp_path}', '--config.objective=mlm'], capsys)
  assert_one_line_error(code, err, 'objective', 'mlm', 'model.family', 'decoder')


def _snapshot(root):
  """{relative path: sha1} of every file under `root`."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir holding a finished 4-step run with checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  assert train.main(TINY + [f'--workdir={workdir}', '--config.train.steps=4']) == 0
  ckpts = os.path.join(workdir, 'default', 'gpt2_tiny', 'checkpoints')
  assert sorted(os.listdir(ckpts)) == ['2', '4']
  return workdir


def test_workdir_of_another_model_is_refused_and_untouched(trained, capsys):
  before = _snapshot(trained)
  code, err = run_main(TINY + [f'--workdir={trained}', '--config.train.steps=6',
                               '--config.model.num_layers=2'], capsys)
  line = assert_one_line_error(code, err, 'different model', 'num_layers', '--workdir',
                               'init_from')
  assert 'checkpoints' in line
  assert _snapshot(trained) == before


# orbax's async reader complains about its closed event loop after the failed read.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_corrupt_latest_checkpoint_falls_back(trained, tmp_path, capsys, caplog,
                                              corrupt_checkpoint):
  workdir = str(tmp_path / 'w')
  shutil.copytree(trained, workdir)
  ckpts = os.path.join(workdir, 'default', 'gpt2_tiny', 'checkpoints')
  corrupt_checkpoint(os.path.join(ckpts, '4'))
  with caplog.at_level(logging.WARNING, logger='transformer.training.checkpoint'):
    assert train.main(TINY + [f'--workdir={workdir}', '--config.train.steps=6']) == 0
  out = capsys.readouterr().out
  assert 'Resumed' in out and 'from step 2' in out, out
  warning = ' '.join(r.getMessage() for r in caplog.records)
  assert os.path.join(ckpts, '4') in warning and 'restoring step 2' in warning, warning
  assert os.path.isdir(os.path.join(ckpts, '4' + checkpoint._CORRUPT_SUFFIX))  # kept  # pylint: disable=protected-access
  ckpt = checkpoint.Checkpointer(ckpts, every=2, keep=3)
  assert ckpt.latest_step() == 6 and 4 in ckpt.all_steps()    # training went on past it
  ckpt.close()


@pytest.mark.parametrize('key,value', [
    ('experiment', '{outside}'), ('experiment', '..'), ('experiment', '../escaped'),
    ('experiment', 'a/b'), ('run_name', '{outside}'), ('run_name', '..'),
    ('run_name', '../../escaped'), ('run_name', 'x/y'), ('experiment', '.'),
])
def test_run_directory_stays_inside_workdir(key, value, tmp_path, capsys):
  """experiment and run_name are single directory names: nothing lands outside --workdir."""
  workdir, outside = tmp_path / 'nest' / 'workdir', tmp_path / 'outside'
  workdir.mkdir(parents=True)
  value = value.format(outside=outside)
  code, err = run_main(TINY + [f'--workdir={workdir}', '--config.train.steps=1',
                               f'--config.{key}={value}'], capsys)
  assert_one_line_error(code, err, f'{key}={value}', '--workdir')
  assert sorted(p.name for p in tmp_path.rglob('*')) == ['nest', 'workdir']   # nothing written


def _resume_argv(trained, tmp_path, change):
  """Resume the finished 4-step run for 2 more steps with one setting changed."""
  if change == 'data.source':   # other text, the run's own tokenizer: the model still fits
    (tmp_path / 'other.txt').write_text('def f(x):\n    return x + 1\n' * 200)
    tokenizer = os.path.join(trained, 'default', 'gpt2_tiny', 'tokenizer.model')
    extra = [f'--config.data.source=text:{tmp_path}/*.txt', f'--config.data.tokenizer={tokenizer}']
  else:
    extra = [{'opt.grad_clip_norm': '--config.opt.grad_clip_norm=0',
              'opt.optimizer': '--config.opt.optimizer=adafactor',
              'train.seed': '--config.train.seed=1'}[change]]
  return TINY + [f'--workdir={trained}', '--config.train.steps=6'] + extra


# orbax's async reader complains about its closed event loop after the failed read.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('change,saved', [
    ('opt.grad_clip_norm', 'opt.grad_clip_norm=1.0'), ('opt.optimizer', 'opt.optimizer=adamw'),
    ('train.seed', 'train.seed=0'), ('data.source', 'data.source=python_stdlib/text')])
def test_resume_with_a_changed_setting_is_refused_and_untouched(trained, tmp_path, capsys,
                                                                 change, saved):
  """An optimizer change (another optimizer-state tree) or a changed seed or data source (the
  saved data positions would point into another order): one line naming the key and the saved
  value, exit 2, the run directory unchanged."""
  before = _snapshot(trained)
  code, err = run_main(_resume_argv(trained, tmp_path, change), capsys)
  line = assert_one_line_error(code, err, f'`{change}=', saved, '--workdir', 'init_from')
  assert 'Traceback' not in err, err
  assert _snapshot(trained) == before, line


def test_resume_with_a_changed_learning_rate_goes_on_with_a_note(trained, tmp_path, capsys):
  """A setting that keeps the optimizer state's shape may change on resume: it is named once."""
  workdir = str(tmp_path / 'w')
  shutil.copytree(trained, workdir)
  assert train.main(TINY + [f'--workdir={workdir}', '--config.train.steps=6',
                            '--config.opt.learning_rate=0.001']) == 0
  out = capsys.readouterr().out
  assert 'from step 4' in out and 'Note: opt.learning_rate changed' in out, out


def test_evaluate_refuses_eval_steps_zero(trained, capsys):
  from transformer import evaluate  # pylint: disable=import-outside-toplevel
  capsys.readouterr()
  code = evaluate.main(TINY + [f'--workdir={trained}', '--config.train.eval_steps=0'])
  assert_one_line_error(code, capsys.readouterr().err, '`train.eval_steps=0`', 'no eval')


@pytest.mark.parametrize('overrides,reason', [
    (['--config.model.positions=relative'], "T5's relative-position bias"),
    (['--config.model.attention_dropout_rate=0.1'], 'attention dropout > 0'),
    (['--config.data.seq_len=48'], 'sequence length 48'),
])
def test_explicit_splash_that_cannot_run_is_one_line(overrides, reason, tmp_path, capsys):
  code, err = run_main(TINY + [f'--workdir={tmp_path}', '--config.model.attention_impl=splash',
                               *overrides], capsys)
  line = assert_one_line_error(code, err, '`model.attention_impl=splash`', reason)
  assert line.endswith('use model.attention_impl=auto or xla')
  assert os.listdir(tmp_path) == []


def test_explicit_cudnn_without_a_gpu_is_one_line(tmp_path, capsys):
  code, err = run_main(TINY + [f'--workdir={tmp_path}', '--config.model.attention_impl=cudnn'],
                       capsys)
  assert_one_line_error(code, err, '`model.attention_impl=cudnn`', 'cuDNN needs an NVIDIA GPU')
  assert os.listdir(tmp_path) == []
