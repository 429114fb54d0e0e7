"""One writer per directory: an OS lock on `<directory>/.lock`, held while the writer lives.

`DirLock` takes an exclusive, non-blocking `fcntl.flock` on `<directory>/.lock`. The kernel
releases it when the process ends, however it ends, so a `kill -9` never leaves a stale
claim. The holder writes its PID and host into the file, so that a second writer can name
it. On a filesystem that cannot lock (Lustre mounted without `-o flock`, some NFS: flock
fails with ENOSYS, ENOLCK or EOPNOTSUPP) the holder warns in one line and goes on
unguarded. A training run's workdir (resnet_jax.train.workdir_claim) and a prepared
dataset being written (resnet_jax.data.prepared_out) are claimed with it; subclasses say
what the directory is in their messages.
"""
import errno
import fcntl
import logging
import os
import socket

from resnet_jax import storage
from resnet_jax.errors import WorkdirBusyError

LOCK_NAME = '.lock'
# flock's errors for "this filesystem cannot lock": not a reason to refuse the writer.
NO_LOCKS = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP})

log = logging.getLogger(__name__)


def missing_directories(path: str) -> list:
  """`path` and those of its parents that do not exist yet, deepest first."""
  missing = []
  path = os.path.abspath(path)
  while not os.path.isdir(path) and os.path.dirname(path) != path:
    missing.append(path)
    path = os.path.dirname(path)
  return missing


class DirLock:
  """An exclusive, non-blocking flock on `<directory>/.lock` (see the module docstring).

  The directory must exist. Subclasses word the refusals: `busy_error(holder)` when another
  process holds the lock, `unwritable_error(error)` when the lock file cannot be made, and
  `warn_no_locks(error)` on a filesystem without locks.
  """

  def __init__(self, directory: str):
    self.directory = directory
    self.path = os.path.join(directory, LOCK_NAME)
    self.created_file = False
    self._fd = None

  def busy_error(self, holder: str) -> Exception:
    return WorkdirBusyError(f'{self.directory!r} is in use by another process ({holder}); '
                            'expected one writer at a time: wait for it to end (or stop it)')

  def unwritable_error(self, error: OSError) -> Exception:
    return storage.write_error(self.path, error)

  def warn_no_locks(self, error: OSError) -> None:
    log.warning('%r is on a filesystem that cannot lock (%s): nothing stops a second writer '
                'from using it at the same time', self.directory, error.strerror or error)

  def acquire(self) -> None:
    """Takes the lock; `busy_error` naming the holder if another process has it."""
    while True:
      existed = os.path.exists(self.path)
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as error:
        raise self.unwritable_error(error) from error
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as error:
        if error.errno in NO_LOCKS:
          self.warn_no_locks(error)
          break
        holder = _read_holder(fd)
        os.close(fd)
        if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          raise self.unwritable_error(error) from error
        raise self.busy_error(holder)
      # A holder that gave up its claim may have removed the file we opened: lock the file
      # that is there now.
      try:
        same = os.path.samestat(os.fstat(fd), os.stat(self.path))
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    self._fd = fd
    self.created_file = not existed
    try:
      os.ftruncate(fd, 0)
      os.write(fd, f'pid {os.getpid()} on host {socket.gethostname()}\n'.encode())
    except OSError as error:  # A full disk: the lock holds, only the holder's name is lost.
      log.debug('cannot write the holder into %s: %s', self.path, error)

  def release(self, remove_file: bool = False) -> None:
    """Gives the lock up; `remove_file` also removes `.lock` (before unlocking, so that no
    other process locks a file that is about to go)."""
    if self._fd is None:
      return
    if remove_file:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    os.close(self._fd)  # Closing the last descriptor releases the lock.
    self._fd = None


def _read_holder(fd: int) -> str:
  try:
    text = os.pread(fd, 200, 0).decode(errors='replace').strip()
  except OSError:
    text = ''
  return text or 'a process that is just starting'
