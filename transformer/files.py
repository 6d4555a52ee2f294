"""Writing a file whole: `with atomic_write(path) as tmp:` write to `tmp`; `path` becomes it.

`tmp` is a new file of a unique name in `path`'s directory (tempfile.mkstemp; hidden, and with
`path`'s extension kept, so writers that infer a format from the name, like matplotlib's savefig,
still do). Writers of one path that meet (search workers ending together, Slurm tasks on several
hosts) therefore never share a temporary file, and the end of the block moves it onto `path`
with os.replace, atomic on POSIX: a reader finds one writer's complete file, never half of one.
A block that raises leaves `path` as it was and removes `tmp`. The file gets the permissions
open() would give it (0o666 less the umask), not mkstemp's 0o600.
"""

import contextlib
import os
import tempfile

_UMASK = os.umask(0o022)   # read once at import (the only way to read it), put back at once
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path):
  """A unique temporary path to write; moved onto `path` when the block ends without error."""
  directory, name = os.path.split(os.path.abspath(path))
  stem, ext = os.path.splitext(name)
  fd, tmp = tempfile.mkstemp(prefix=f'.{stem}.', suffix=f'.tmp{ext}', dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
