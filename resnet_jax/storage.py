"""Files a run leaves on disk: written whole or not at all, and values as JSON gives them back.

Every writer goes through a temporary file in the target's directory and `os.replace`, so
that a crash (or an exception while producing the contents) never leaves half a file and
never replaces a good one; `replaced_on_success` is that rule for writers that take a file
name (h5py, matplotlib). A write that fails for lack of space or permission is a
`StorageError` naming the path and the free space there (`write_error`), also where a
library reports the OS's failure in its own words (`write_failure`, `failures_named`).
"""
import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Optional

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

  A failure for lack of space or permission, the block's included (a writer that reports it
  in its own words too, see `write_failure`), is the StorageError naming `path`."""
  with failures_named(path):
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                                   suffix=suffix)
    try:
      os.fchmod(handle, _default_mode())  # mkstemp makes it private (0600); others read it.
    finally:
      os.close(handle)
    try:
      yield tmp
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)


@contextlib.contextmanager
def failures_named(path: str):
  """Turns a write failure (lack of space or permission) raised in the block into the
  StorageError naming `path`; other errors pass unchanged."""
  try:
    yield
  except Exception as error:
    failure = write_failure(path, error)
    if failure is None or failure is error:
      raise
    raise failure from error


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
  return f'{size_text(free)} free'


def size_text(size: float) -> str:
  """A number of bytes as people read it: '0 B', '436.0 kB', '2.6 MB' (powers of 1000)."""
  for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
    if size < 1000 or unit == 'TB':
      return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
    size /= 1000
  raise AssertionError('unreachable')


def write_failure_errno(error: BaseException) -> Optional[int]:
  """The errno of a write failure (one of WRITE_FAILURES) that `error` reports, or None.

  Besides an OSError, libraries that write in their own threads or native code report the
  OS's failure in their own exception types and words: tensorstore (under Orbax) as
  "... No space left on device [os_error_code='28']" in a ValueError, array_record in a
  RuntimeError holding the OS's message. Their causes and contexts are searched too."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno is not None:
      return error.errno if error.errno in WRITE_FAILURES else None
    number = write_failure_errno_in_text(str(error))
    if number is not None:
      return number
    error = error.__cause__ or error.__context__
  return None


def write_failure_errno_in_text(text: str) -> Optional[int]:
  """The errno of a write failure that a library's message reports in the OS's words (or
  as tensorstore's os_error_code), or None."""
  code = re.search(r"os_error_code='?(\d+)", text)
  if code and int(code.group(1)) in WRITE_FAILURES:
    return int(code.group(1))
  for number in sorted(WRITE_FAILURES):
    if os.strerror(number) in text:
      return number
  return None


def write_failure(path: str, error: BaseException) -> Optional[StorageError]:
  """The StorageError for `error` if it reports a write failure (see write_failure_errno):
  `error` itself if it is one already, else a new one naming `path`; None otherwise."""
  if isinstance(error, StorageError):
    return error
  number = write_failure_errno(error)
  if number is None:
    return None
  return write_error(path, error if isinstance(error, OSError) and error.errno == number
                     else OSError(number, os.strerror(number)))


def write_error(path: Optional[str], error: BaseException | str,
                note: str = '') -> StorageError:
  """The StorageError for a failed write of `path`: what the OS said and the free space.

  `error` is the OSError (or the text of a library's error that wraps one); `note` ends the
  message (what is intact, what to do). A `path` of None is a write the OS did not name
  (an OSError from writing to an open file has no file name)."""
  said = error if isinstance(error, str) else (getattr(error, 'strerror', None) or str(error))
  number = getattr(error, 'errno', None)
  if number in (errno.EACCES, errno.EPERM, errno.EROFS):
    expected = 'a path this process may write'
  else:
    expected = 'room for it (free space there, or write elsewhere)'
  if path is None:
    found = f'a file cannot be written ({said}; the OS did not say which file)'
  else:
    found = f'{path}: cannot be written ({said}; {free_space(path)} on its filesystem)'
  failure = StorageError(f'{found}; expected {expected}{"; " + note if note else ""}')
  failure.errno = number
  return failure
