"""ViT end to end on the embedded digits: it trains and reports as a text run does (images/s,
patches/s, pictures over the image, misclassified images), resumes exactly with seeded
augmentation, and refuses bad image folders in one line with nothing written."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from transformer import config as config_lib
from transformer import train
from transformer.monitoring.events import read_events
from transformer.training import checkpoint, hooks, loop, setup

pytest.importorskip('sklearn')

# A smaller tiny ViT: the digits, 1 layer, a few steps; eval and pictures at the end.
SMALL = {'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.d_ff': 64,
         'train.batch_size': 32, 'train.eval_steps': 1, 'train.log_every': 2,
         'checkpoint.async_save': False, 'opt.warmup_steps': 2, 'log.samples': 4}


def load(steps, **overrides):
  values = {**SMALL, 'train.steps': steps, 'train.eval_every': steps, 'checkpoint.every': steps,
            **overrides}
  return config_lib.load('configs/vit.py:tiny', {k: str(v) for k, v in values.items()})


def test_vit_trains_on_the_digits_and_reports_like_a_text_run(tmp_path, capsys):
  config = load(60, **{'opt.learning_rate': 3e-3, 'opt.warmup_steps': 1, 'train.log_every': 10})
  final = loop.train(config, str(tmp_path))
  out = capsys.readouterr()
  run_dir = setup.run_dir(config, str(tmp_path))
  events = read_events(run_dir)
  scalars, images = events['scalars'], events['images']
  losses = [v for _, v in scalars['train/loss']]
  assert np.isfinite(losses).all() and losses[-1] < min(losses[0], np.log(10))   # ln 10: uniform
  assert 0 <= final['eval/accuracy'] <= 1 and 'eval/top5_accuracy' in final
  for tag in ('perf/images_per_sec', 'perf/patches_per_sec', 'perf/mfu'):
    assert scalars[tag][-1][1] > 0, tag
  assert scalars['perf/packing_efficiency'][-1][1] == 1.0
  assert scalars['perf/patches_per_sec'][-1][1] == pytest.approx(
      17 * scalars['perf/images_per_sec'][-1][1])
  (_, height, width), = images['image_attention/class_token']
  assert height >= 200 and width >= 4 * 200, (height, width)   # readable panels, not 8 x 8 px
  assert 'eval_images/misclassified' in images or 'samples' in events['text']
  assert 'data   digits: 1,498 train / 299 eval images; 32 x 8x8x1 images a step' in out.out
  assert 'FLOPs/patch' in out.out and 'patches/s' in out.err + out.out
  assert not os.path.exists(os.path.join(run_dir, 'tokenizer.model'))
  assert os.path.exists(os.path.join(run_dir, 'config.json'))


class _StopAt(hooks.Hook):
  """Stops the run after the eval of `step`, as a SIGTERM would (the loop saves first)."""

  def __init__(self, step):
    self.step = step

  def after_eval(self, step, result):
    return f'stopped at {step}' if step == self.step else None


def _final(workdir, config):
  ckpt = checkpoint.Checkpointer(os.path.join(setup.run_dir(config, workdir), 'checkpoints'),
                                 every=1, keep=2)
  try:
    step, state, position = ckpt.restore(None)
  finally:
    ckpt.close()
  return step, jax.device_get(state), position


@pytest.mark.slow
def test_a_stopped_vit_run_resumes_bit_identically(tmp_path):
  """With random crops and flips on, dropout on: the resumed run's parameters, optimizer state
  and data position equal the uninterrupted run's."""
  extra = {'data.crop_scale': 0.5, 'data.flip': True, 'model.dropout_rate': 0.1,
           'train.eval_every': 3, 'checkpoint.every': 3, 'log.samples': 0,
           'log.attention_images': False, 'log.attention_stats': False}
  quiet = [hooks.Console()]
  loop.train(load(6, **extra), str(tmp_path / 'whole'), hooks=quiet)
  loop.train(load(6, **extra), str(tmp_path / 'parts'), hooks=quiet + [_StopAt(3)])
  assert _final(str(tmp_path / 'parts'), load(6))[0] == 3
  loop.train(load(6, **extra), str(tmp_path / 'parts'), hooks=quiet)
  step, state, position = _final(str(tmp_path / 'parts'), load(6))
  ref_step, ref_state, ref_position = _final(str(tmp_path / 'whole'), load(6))
  assert step == ref_step == 6 and position == ref_position
  for (path, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                               jax.tree_util.tree_flatten_with_path(ref_state)[0]):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _run_main(argv, capsys):
  capsys.readouterr()
  try:
    code = train.main(argv)
  except SystemExit as e:
    code = e.code
  return code, capsys.readouterr().err


def _write(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _bad_folder(root, kind):
  grey = np.zeros((8, 8), np.uint8)
  if kind == 'empty':
    os.makedirs(os.path.join(root, 'zero'))
    return root
  for c in ('zero', 'one'):
    for i in range(3):
      _write(os.path.join(root, c, f'{i}.png'), grey)
  if kind == 'unreadable':
    bad = os.path.join(root, 'one', 'torn.jpg')
    with open(bad, 'wb') as f:
      f.write(b'\xff\xd8\xff not a jpeg')
    return bad
  bad = os.path.join(root, 'one', 'colour.png')
  _write(bad, np.zeros((8, 8, 3), np.uint8))
  return bad


@pytest.mark.parametrize('kind,says', [('empty', 'no .png/.jpg/.jpeg images in'),
                                       ('unreadable', 'is not a readable image'),
                                       ('channels', 'has 3 channels, the model 1')])
def test_bad_image_folders_are_one_line_errors_and_write_nothing(kind, says, tmp_path, capsys):
  root = str(tmp_path / 'images')
  culprit = _bad_folder(root, kind)
  workdir = tmp_path / 'runs'
  code, err = _run_main(['--config', 'configs/vit.py:tiny', f'--config.data.source=images:{root}',
                         f'--workdir={workdir}'], capsys)
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert code == 2 and len(lines) == 1, err
  assert says in lines[0] and culprit in lines[0], lines[0]
  assert not workdir.exists()
