"""A run's hold on its workdir: one run at a time, and nothing left behind by a run that
never started training.

One run per workdir: process 0 takes an OS lock (`fcntl.flock`, resnet_jax.dir_lock) on
`<workdir>/.lock` before anything else is written there and holds it for the run's
lifetime. The kernel releases it when the process ends, however it ends, so a `kill -9`
never leaves a stale lock. The holder writes its PID and host into the file, so that a
second run can name it. On a filesystem that cannot lock (Lustre mounted without
`-o flock`, some NFS: flock fails with ENOSYS, ENOLCK or EOPNOTSUPP) the run warns in one
line and goes on unguarded.

Nothing left behind: until the run calls `keep()` (just before its first training step),
leaving the claim removes every entry the run added to the workdir (and the workdir itself,
with any parent directories, if the run created them), so that a rejected or stopped start
leaves the disk as it was.
"""
import fcntl  # noqa: F401  The lock's flock, as tests reach it (resnet_jax.dir_lock uses it).
import logging
import os
import shutil

import jax
import numpy as np
from jax.experimental import multihost_utils

from resnet_jax import dir_lock
from resnet_jax.dir_lock import LOCK_NAME, missing_directories  # noqa: F401 (re-exported)
from resnet_jax.errors import ConfigError, WorkdirBusyError

log = logging.getLogger(__name__)


def _writable_error(workdir: str, error: OSError) -> ConfigError:
  return ConfigError(f'workdir {workdir!r} cannot be written ({error.strerror or error}); '
                     'expected a directory this process can create files in')


class WorkdirLock(dir_lock.DirLock):
  """The workdir's `.lock` (resnet_jax.dir_lock), its refusals worded for training runs."""

  def __init__(self, workdir: str):
    super().__init__(workdir)
    self.workdir = workdir

  def busy_error(self, holder: str) -> Exception:
    return WorkdirBusyError(
        f'workdir {self.workdir!r} is in use by another run ({holder}); expected one run '
        'per workdir: wait for that run to end (or stop it), or pass another --workdir')

  def unwritable_error(self, error: OSError) -> Exception:
    return _writable_error(self.workdir, error)

  def warn_no_locks(self, error: OSError) -> None:
    log.warning('workdir %r is on a filesystem that cannot lock (%s): nothing stops a '
                'second run from using it at the same time', self.workdir,
                error.strerror or error)


class WorkdirClaim:
  """Context manager: creates and locks the workdir, and undoes what an unkept run added.

  Args:
    workdir: the run's work directory.
    writer: whether this process takes the lock and cleans up (process 0); the others
      only learn whether process 0 got it.
  """

  def __init__(self, workdir: str, writer: bool = True):
    self.workdir = workdir
    self.writer = writer
    self.kept = False
    self._lock = WorkdirLock(workdir)
    self._created_dirs = []  # The workdir and the parents this run made, deepest first.
    self._before = None

  def __enter__(self):
    busy = None
    if self.writer:
      self._created_dirs = missing_directories(self.workdir)
      try:
        os.makedirs(self.workdir, exist_ok=True)
      except OSError as error:
        raise _writable_error(self.workdir, error) from error
      try:
        self._lock.acquire()
      except WorkdirBusyError as error:
        # Another run owns whatever is there, even a directory we just created.
        self._created_dirs = []
        busy = error
      else:
        self._before = set(os.listdir(self.workdir))
    if jax.process_count() > 1:
      # Every process must learn that process 0 found the workdir busy, or they would wait
      # for it in their first collective.
      found = multihost_utils.process_allgather(np.array(busy is not None))
      if busy is None and bool(np.any(found)):
        busy = WorkdirBusyError(f'workdir {self.workdir!r} is in use by another run (process '
                                '0 of this run found it locked); expected one run per workdir')
    if busy is not None:
      raise busy
    return self

  def keep(self) -> None:
    """From now on the workdir holds this run's work: nothing is removed on the way out."""
    self.kept = True

  def __exit__(self, *exc):
    if self.writer and not self.kept and self._before is not None:
      self._remove_added()
    self._lock.release(remove_file=self.writer and not self.kept and self._lock.created_file)
    if self.writer and not self.kept:
      for directory in self._created_dirs:
        try:
          os.rmdir(directory)  # Only if empty: never what another run put there.
        except OSError:
          break

  def _remove_added(self) -> None:
    for name in sorted(set(os.listdir(self.workdir)) - self._before):
      path = os.path.join(self.workdir, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        try:
          os.remove(path)
        except FileNotFoundError:
          pass
