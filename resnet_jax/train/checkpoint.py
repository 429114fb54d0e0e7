"""Orbax checkpoints of the training state: save asynchronously, keep the last K and the best,
restore the newest intact one.

A checkpoint (one step directory) holds two items:
- `state`: the unreplicated TrainState as a nested dict of numpy arrays (see
  `state.state_to_host`). Numpy leaves are written by process 0 only, while every process
  takes part in the save (Orbax synchronises them).
- `meta`: JSON with the step, a CRC-32 of every array (so a garbled file is detected even
  where the storage format has no checksum), and whatever the loop needs to continue
  exactly (pending metric sums, preprocessing statistics, final metrics).

Retention: Orbax's `max_to_keep` combined with `best_fn` keeps the K *best* checkpoints,
not the last K, so we give it an explicit policy: LatestN(K) or BestN(1) by eval accuracy.

A save that fails for lack of space or permission (reported by Orbax's background threads as
a tensorstore error, when the next save or `wait` waits for it) is a StorageError naming the
checkpoint's directory, the free space and the last intact checkpoint; the half-written
directory of that save is removed at once (it would be removed at the next start anyway,
and it holds the space the next try needs). The checkpoint library's own reports of the
failure (error logs with tracebacks, one 'Event loop is closed' per array still being
written) are dropped: the StorageError says it in one line.

A checkpoint that fails to restore (truncated, garbled, half-written) is moved aside into
`<workdir>/checkpoints_broken/` — never deleted — and the next older one is tried; one
warning names it, where it went and which step was restored instead. A checkpoint that reads
fine but does not fit the model raises CheckpointError naming the first mismatching array
and both shapes.
"""
import contextlib
import errno
import logging
import os
import shutil
import sys
import threading
import time
import zlib
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from resnet_jax import storage
from resnet_jax.errors import CheckpointError
from resnet_jax.trees import first_shape_mismatch, flatten

log = logging.getLogger(__name__)

BEST_METRIC = 'eval_accuracy'


def tree_checksums(tree: dict) -> dict:
  """{'path/to/leaf': crc32 of its bytes} for a nested dict of numpy arrays."""
  return {path: zlib.crc32(np.ascontiguousarray(leaf).tobytes()) & 0xFFFFFFFF
          for path, leaf in flatten(tree).items()}


def check_fits(restored: dict, template: dict, where: str) -> None:
  """CheckpointError unless `restored` has exactly the arrays (paths, shapes) of `template`.

  Parameters are compared first, so the message names the first parameter that differs.
  """
  mismatch = first_shape_mismatch(restored, template)
  if mismatch is not None:
    path, got, expected = mismatch
    raise CheckpointError(
        f'checkpoint {where} does not fit this model: {path} has shape {got} '
        f'in the checkpoint but {expected} in the model built from the config '
        f'(was the checkpoint written by another model, layout, num_classes or optimizer?)')


class Checkpointer:
  """A CheckpointManager over `<workdir>/checkpoints` with the policies above."""

  def __init__(self, workdir: str, keep: int, async_save: bool = True, read_only: bool = False):
    """read_only: for readers of a workdir a run may be writing to (predict.py): nothing is
    created, cleaned up, deleted or moved."""
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.broken_directory = os.path.abspath(os.path.join(workdir, 'checkpoints_broken'))
    metric = lambda metrics: metrics[BEST_METRIC]
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=metric, reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    self.read_only = read_only
    if read_only:
      options = ocp.CheckpointManagerOptions(best_fn=metric, best_mode='max', read_only=True,
                                             create=False)
    else:
      options = ocp.CheckpointManagerOptions(
          best_fn=metric, best_mode='max', preservation_policy=policy,
          enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self._warn_about_unfinished_saves()
    self._saving = None  # The step of the save in flight (until `wait` has seen it end).
    self._failed = False  # Whether a save failed (reported once; `close` stays quiet).
    if not read_only:
      quiet_write_failures()
    with storage.failures_named(self.directory):
      self.manager = ocp.CheckpointManager(self.directory, options=options)

  def _warn_about_unfinished_saves(self):
    """Names the half-written checkpoints (saves that never finished) Orbax removes on start.

    A reader (read_only) leaves them alone: they may be saves in progress."""
    if self.read_only or jax.process_index() != 0 or not os.path.isdir(self.directory):
      return
    for name in sorted(os.listdir(self.directory)):
      if ocp.path.step.TMP_DIR_SUFFIX in name:
        log.warning('checkpoint %s is half-written (its save never finished, e.g. the process '
                    'was killed); removing it and resuming from the newest committed one',
                    os.path.join(self.directory, name))

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def all_steps(self) -> list:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The step with the highest eval accuracy, or the latest if none has metrics."""
    return self.manager.best_step() or self.manager.latest_step()

  def save(self, step: int, state: dict, meta: dict, eval_accuracy: Optional[float] = None):
    """Starts saving (asynchronously); `state` is the host copy from `state_to_host`.

    Must be called by every process. Returns at once; `wait()` blocks until it is on disk.
    """
    meta = dict(meta, step=int(step), checksums=tree_checksums(state))
    metrics = None if eval_accuracy is None else {BEST_METRIC: float(eval_accuracy)}
    self.wait()  # Orbax's save waits for the previous one too; its failure is that step's.
    with self._write_failures(step):
      self._saving = step
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)),
                        metrics=metrics, force=True)

  def wait(self):
    """Blocks until the save in flight is on disk; StorageError if it failed for lack of
    space or permission."""
    with self._write_failures(self._saving):
      self.manager.wait_until_finished()
    self._saving = None

  def close(self):
    if self._failed:  # Already reported; Orbax would raise it again while closing.
      with contextlib.suppress(Exception):
        self.manager.close()
      return
    with self._write_failures(self._saving):
      self.manager.close()

  @contextlib.contextmanager
  def _write_failures(self, step: Optional[int]):
    """Turns the failure of saving `step` for lack of space or permission into the
    StorageError naming its directory and the last intact checkpoint (after removing what
    the failed save wrote); other errors pass unchanged."""
    try:
      yield
    except Exception as error:
      number = storage.write_failure_errno(error)
      if number is None or self._failed:
        raise
      self._failed, self._saving = True, None
      where = self.directory if step is None else self.path(step)
      note = self._after_failure(step, number)  # Frees the failed save's space first.
      failure = storage.write_error(where, OSError(number, os.strerror(number)), note=note)
      raise failure from error

  def _after_failure(self, step: Optional[int], number: int) -> str:
    """Removes the half-written directory of the failed save of `step`; says what is kept
    and what to do."""
    if step is not None and jax.process_index() == 0 and os.path.isdir(self.directory):
      _remove_half_written(self.directory, f'{step}{ocp.path.step.TMP_DIR_SUFFIX}')
    once = ('once it is writable' if number in (errno.EACCES, errno.EPERM, errno.EROFS)
            else 'after freeing space')
    kept = [s for s in self.all_steps() if s != step and os.path.isdir(self.path(s))]
    if not kept:
      return f'no checkpoint of this run is on disk yet: rerun the same command {once}'
    size = storage.size_text(_directory_size(self.path(kept[-1])))
    return (f'the last checkpoint, {self.path(kept[-1])} ({size}), is intact: rerun the same '
            f'command {once} to resume from it')

  def read(self, step: int) -> tuple[dict, dict]:
    """(state dict, meta) of one step, verified against its checksums; raises on damage."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                      meta=ocp.args.JsonRestore()))
    state, meta = restored['state'], restored['meta']
    if not isinstance(meta, dict) or meta.get('step') != step:
      raise ValueError(f'meta of checkpoint {self.path(step)} is missing or names another step')
    state = jax.tree.map(np.asarray, state)
    if tree_checksums(state) != meta.get('checksums'):
      raise ValueError(f'checkpoint {self.path(step)}: array contents do not match their '
                       'checksums (garbled file)')
    return state, meta

  def restore_latest(self, template: dict, steps=None) -> Optional[tuple[int, dict, dict]]:
    """The newest intact checkpoint as (step, state dict, meta), or None if there is none.

    Damaged ones on the way are moved to `checkpoints_broken/`, each named in one warning
    that also says where it went and which step was restored instead; what the checkpoint
    library prints while failing to read them is dropped (see `silence_late_read_errors`).
    `template` (a host state dict) fixes the expected arrays: a checkpoint that reads
    fine but holds other shapes raises CheckpointError.
    """
    set_aside = []  # (step, error, where it went) of each damaged checkpoint.
    outcome = 'no older checkpoint was restored'  # Until one is (or none is left).
    try:
      for step in reversed(self.all_steps() if steps is None else sorted(steps)):
        try:
          with quiet_library():
            state, meta = self.read(step)
        except Exception as error:  # Any failure to read means the checkpoint is damaged.
          silence_late_read_errors()
          set_aside.append((step, error, self._quarantine(step)))
          continue
        outcome = f'the next older one, {self.path(step)}, does not fit this model'
        check_fits(state, template, self.path(step))
        outcome = f'restored step {step} instead'
        return step, state, meta
      outcome = 'no intact checkpoint is left'
      return None
    finally:
      for step, error, target in set_aside:
        moved = 'left in place (read-only)' if target is None else f'moved it to {target}'
        log.warning('checkpoint %s is damaged and cannot be restored (%s); %s; %s',
                    self.path(step), _first_line(error), moved, outcome)

  def _quarantine(self, step: int) -> Optional[str]:
    """Moves a damaged checkpoint into checkpoints_broken/; returns where (None if read-only)."""
    if self.read_only:
      return None
    source = self.path(step)
    target = os.path.join(self.broken_directory, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    if jax.process_index() == 0 and os.path.exists(source):
      os.makedirs(self.broken_directory, exist_ok=True)
      os.replace(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'quarantine checkpoint {step}')
    self.manager.reload()
    return target


def _directory_size(path: str) -> int:
  """The bytes of the files under `path`."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      with contextlib.suppress(OSError):
        total += os.path.getsize(os.path.join(root, name))
  return total


def _first_line(error: Exception) -> str:
  text = str(error).splitlines()[0][:300] if str(error) else ''
  return f'{type(error).__name__}: {text}'


@contextlib.contextmanager
def quiet_library():
  """Nothing from the checkpoint library's log (through absl) while a checkpoint is read: a
  damaged one makes it log the failure at length, and raise it, which the caller says in
  one line."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def is_late_read_error(error: Optional[BaseException]) -> bool:
  """True for the error of a read that finished after its event loop closed."""
  return isinstance(error, RuntimeError) and 'Event loop is closed' in str(error)


def silence_late_read_errors() -> None:
  """Drops the 'Event loop is closed' errors of a failed restore's leftover reads.

  A restore that fails part-way leaves tensorstore reads running; they finish after Orbax
  closed its event loop, in other threads or at garbage collection, where they can only
  report their RuntimeError as an 'exception ignored' traceback, up to one per array, at
  any later time (see `drop_event_loop_closed_errors`). A leftover read that fails on the
  damaged file instead (tensorstore's OUT_OF_RANGE) reaches asyncio's "Task exception was
  never retrieved" log record: that record is dropped too, as the caller has already said
  in one line that the checkpoint cannot be read.
  """
  drop_event_loop_closed_errors()
  asyncio_logger = logging.getLogger('asyncio')
  if _drop_unretrieved_task_errors not in asyncio_logger.filters:
    asyncio_logger.addFilter(_drop_unretrieved_task_errors)


def drop_event_loop_closed_errors() -> None:
  """Drops the 'Event loop is closed' RuntimeErrors that reach sys.unraisablehook or
  threading.excepthook: those of tensorstore reads or writes that finish after Orbax closed
  the event loop of a failed restore or save. The hooks (installed once per process,
  chained to the previous ones) drop those errors only; every other exception is reported
  as before."""
  if getattr(sys.unraisablehook, 'drops_late_read_errors', False):
    return
  previous_unraisable, previous_thread = sys.unraisablehook, threading.excepthook

  def unraisable(args):
    if not is_late_read_error(args.exc_value):
      previous_unraisable(args)

  def thread(args):
    if not is_late_read_error(args.exc_value):
      previous_thread(args)

  unraisable.drops_late_read_errors = True
  sys.unraisablehook, threading.excepthook = unraisable, thread


def _drop_unretrieved_task_errors(record: logging.LogRecord) -> bool:
  """False (drop) for asyncio's report of a task whose exception nobody retrieved."""
  return not record.getMessage().startswith('Task exception was never retrieved')


def _remove_half_written(directory: str, prefix: str, patience: float = 5.0) -> None:
  """Removes the entries of `directory` starting with `prefix` (a failed save's temporary
  directory). The library's writer threads may still be finishing files in it when the
  failure is reported, so removal is retried until it is gone (at most `patience` seconds;
  a leftover is removed at the next start anyway)."""
  deadline = time.monotonic() + patience
  while True:
    left = [name for name in os.listdir(directory) if name.startswith(prefix)]
    for name in left:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if not left or time.monotonic() > deadline:
      return
    time.sleep(0.05)


def quiet_write_failures() -> None:
  """Drops what the checkpoint library reports by itself, in its background threads, when a
  save fails for lack of space or permission; `Checkpointer` raises that failure as one
  StorageError when it waits for the save.

  The reports are: log records (through absl, and asyncio's for a task's unretrieved
  exception) whose message or attached exception is such a failure, and the 'Event loop is
  closed' errors of the arrays still being written when Orbax closed the save's event loop
  (see `drop_event_loop_closed_errors`). Installed once per process; any other record
  passes.
  """
  drop_event_loop_closed_errors()
  for name in ('absl', 'asyncio'):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _WriteFailureRecords) for f in logger.filters):
      logger.addFilter(_WriteFailureRecords())


class _WriteFailureRecords(logging.Filter):
  """Drops a record of the checkpoint library (or asyncio's, of its tasks) about a write
  that failed for lack of space or permission."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name == 'absl' and f'{os.sep}orbax{os.sep}' not in (record.pathname or ''):
      return True  # Another library's record.
    exception = record.exc_info[1] if record.exc_info else None
    if exception is not None and storage.write_failure_errno(exception) is not None:
      return False
    return storage.write_failure_errno_in_text(record.getMessage()) is None
