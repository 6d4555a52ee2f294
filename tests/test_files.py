"""files.atomic_write: writers of one path that meet each end with their whole file in place,
a failed writer leaves the path and no temporary file, the mode is open()'s."""

import os
import stat
import threading

import pytest

from transformer.files import atomic_write


def _write(path, text, inside=None):
  with atomic_write(path) as tmp:
    with open(tmp, 'w') as f:
      f.write(text[:len(text) // 2])
      if inside:
        inside()
      f.write(text[len(text) // 2:])


def test_two_writers_that_meet_never_raise_and_one_whole_file_wins(tmp_path):
  path = tmp_path / 'results.csv'
  texts = ['a,b\n' + '1,2\n' * 5000, 'a,b\n' + '3,4\n' * 7000]
  both_inside = threading.Barrier(2, timeout=10)
  errors = []

  def writer(text):
    try:
      _write(path, text, inside=both_inside.wait)   # both half-written at once
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
  threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and path.read_text() in texts
  assert os.listdir(tmp_path) == ['results.csv']


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'eval_loss.png'
  path.write_text('old')
  with pytest.raises(RuntimeError):
    _write(path, 'new contents', inside=lambda: (_ for _ in ()).throw(RuntimeError('boom')))
  assert path.read_text() == 'old' and os.listdir(tmp_path) == ['eval_loss.png']


def test_the_temporary_keeps_the_extension_and_the_file_gets_open_s_mode(tmp_path):
  path = tmp_path / 'plot.png'
  with atomic_write(path) as tmp:
    assert tmp.endswith('.png') and os.path.dirname(tmp) == str(tmp_path)
  plain = tmp_path / 'plain'
  plain.write_text('')
  assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
