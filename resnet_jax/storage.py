"""Files a run leaves on disk: written whole or not at all, and values as JSON gives them back.

Every writer goes through a temporary file in the target's directory and `os.replace`, so
that a crash (or an exception while producing the contents) never leaves half a file and
never replaces a good one; `replaced_on_success` is that rule for writers that take a file
name (h5py, matplotlib). A write that fails for lack of space or permission is a
`StorageError` naming the path and the free space there (`write_error`).
"""
import contextlib
import errno
import json
import os
import shutil
import tempfile

from resnet_jax.errors import StorageError

# What the OS says when a write fails for lack of space or permission, not for a bug.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM,
                            errno.EROFS})


def _default_mode() -> int:
  """The mode `open()` gives a new file: 0666 less the umask (read without changing it where
  the OS says it, since os.umask is process-wide and would race with other threads)."""
  try:
    with open('/proc/self/status') as f:
      mask = next(int(line.split()[1], 8) for line in f if line.startswith('Umask:'))
  except (OSError, StopIteration, ValueError):
    mask = os.umask(0o022)
    os.umask(mask)
  return 0o666 & ~mask


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically (see write_bytes_atomic)."""
  if not isinstance(text, str):
    raise TypeError(f'{path}: expected text (str) to write, got {type(text).__name__}')
  write_bytes_atomic(path, text.encode('utf-8'))


@contextlib.contextmanager
def replaced_on_success(path: str, suffix: str = '.tmp'):
  """Yields a new temporary file's name beside `path` (ending in `suffix`) to write the
  whole file at: on leaving the block it replaces `path`, or is removed if the block raised.
  """
  directory = os.path.dirname(os.path.abspath(path))
  handle, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                                 suffix=suffix)
  try:
    os.fchmod(handle, _default_mode())  # mkstemp makes it private (0600); others read results.
  finally:
    os.close(handle)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temporary file (flushed to disk) and os.replace."""
  with replaced_on_success(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def write_json_atomic(path: str, obj) -> None:
  """`obj` as indented JSON with sorted keys, written atomically."""
  write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + '\n')


def save_figure_atomic(fig, path: str, **savefig_kwargs) -> None:
  """`fig.savefig` through a temporary file; the format is taken from `path`'s extension."""
  with replaced_on_success(path, suffix=os.path.splitext(path)[1]) as tmp:
    fig.savefig(tmp, **savefig_kwargs)


def as_json(value):
  """`value` as it reads back from JSON (tuples become lists, keys strings), so that a value
  in memory compares equal to the same value saved earlier."""
  return json.loads(json.dumps(value))


def is_write_failure(error: BaseException) -> bool:
  """Whether `error` is an OSError for lack of space or permission (WRITE_FAILURES)."""
  return isinstance(error, OSError) and error.errno in WRITE_FAILURES


def free_space(path: str) -> str:
  """'12.3 MB free' on the filesystem of `path` (or of its nearest existing parent)."""
  where = os.path.abspath(path)
  while not os.path.exists(where) and os.path.dirname(where) != where:
    where = os.path.dirname(where)
  try:
    free = shutil.disk_usage(where).free
  except OSError:
    return 'free space unknown'
  for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
    if free < 1000 or unit == 'TB':
      return f'{free:.0f} {unit} free' if unit == 'B' else f'{free:.1f} {unit} free'
    free /= 1000
  raise AssertionError('unreachable')


def write_error(path: str, error: BaseException | str) -> StorageError:
  """The StorageError for a failed write of `path`: what the OS said and the free space.

  `error` is the OSError (or the text of a library's error that wraps one)."""
  said = error if isinstance(error, str) else (getattr(error, 'strerror', None) or str(error))
  number = getattr(error, 'errno', None)
  if number in (errno.EACCES, errno.EPERM, errno.EROFS):
    expected = 'a path this process may write'
  else:
    expected = 'room for it (free space there, or write elsewhere)'
  failure = StorageError(f'{path}: cannot be written ({said}; {free_space(path)} on its '
                         f'filesystem); expected {expected}')
  failure.errno = number
  return failure
