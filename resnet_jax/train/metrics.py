"""Metric writers: `metrics.jsonl` (one JSON object per step) and TensorBoard event files.

Only process 0 writes. Both files grow by whole records, written as they come, in the
caller's thread: a killed run loses at most the record being written, and a write that
fails (no space left, no permission) cuts the file back to where it was before raising the
StorageError that names it, so that no torn record is left. Nothing is queued for a
background writer either: tensorboardX's SummaryWriter hands events to a thread that dies
on such a failure, after which its queue fills and the run blocks for good; the event files
here are written directly (TFRecord frames of tensorboardX's Event protos, checksummed as
TensorBoard reads them).

On resume, `truncate_jsonl` drops every line past the restored step and any torn line, and
ends every kept line with its newline (rewriting the file atomically), so that the file is
again one JSON object per line, each step once, before the resumed run appends to it.
TensorBoard holds every step metrics.jsonl holds; steps a killed run wrote past its last
checkpoint appear twice there (the resumed run writes them again, to a new event file).
"""
import contextlib
import itertools
import json
import logging
import math
import os
import socket
import struct
import time
from typing import Iterable, Optional

from resnet_jax import storage
from resnet_jax.errors import DatasetError

log = logging.getLogger(__name__)

JSONL_NAME = 'metrics.jsonl'


def _clean(value):
  """Floats as JSON allows: NaN and infinities become strings."""
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def read_jsonl(path: str, strict: bool = False) -> list[dict]:
  """The records of a metrics file.

  By default a line that is not a whole JSON object with a 'step' is skipped: a file may be
  read while a run is appending to it (the plots, a watcher), and its last line may be one
  still being written. `strict=True` is for a file that no run is writing (tests, after a
  resume): every line must be one JSON object holding 'step' and end in a newline, or
  DatasetError names the file and the line.
  """
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      record = _record(line)
      if record is not None and (line.endswith('\n') or not strict):
        records.append(record)
      elif strict:
        raise DatasetError(f'{path} line {number}: {line[:80]!r} is not a whole JSON object '
                           "with a 'step' ended by a newline; expected one such object a line")
  return records


def _record(line: str) -> Optional[dict]:
  """The line's record, or None if it is not a JSON object holding a 'step'."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) and 'step' in record else None


def _step(record: Optional[dict]) -> Optional[int]:
  try:
    return int(record['step'])
  except (KeyError, TypeError, ValueError):
    return None


def truncate_jsonl(path: str, last_step: int) -> int:
  """Keeps the records with step <= last_step, each ended by its newline; drops the rest
  and any line that is not a whole record (a torn one). Returns how many lines went."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    step = _step(_record(line))
    if step is not None and step <= last_step:
      kept.append(line if line.endswith('\n') else line + '\n')
  # A whole record that lost only its newline is kept, with it: the run that wrote it has
  # checkpointed past it, so the resumed run will not write it again.
  if kept != lines:
    storage.write_text_atomic(path, ''.join(kept))
  return len(lines) - len(kept)


class AppendFile:
  """A file that grows by whole records: `append` writes one completely or, if the write
  fails, cuts the file back to its size before and raises (a StorageError for lack of space
  or permission, naming the file)."""

  def __init__(self, path: str):
    self.path = path
    with storage.failures_named(path):
      self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

  def append(self, data: bytes) -> None:
    with storage.failures_named(self.path):
      size = os.fstat(self._fd).st_size
      try:
        left = memoryview(data)
        while left:  # A write may take only part (the last bytes that fit, say).
          left = left[os.write(self._fd, left):]
      except BaseException:
        with contextlib.suppress(OSError):
          os.ftruncate(self._fd, size)
        raise

  def sync(self) -> None:
    """Puts the file's contents on the disk itself (they are in the file already)."""
    with storage.failures_named(self.path):
      os.fsync(self._fd)

  def close(self) -> None:
    if self._fd is not None:
      fd, self._fd = self._fd, None
      with storage.failures_named(self.path):
        os.close(fd)


_event_files = itertools.count(1)  # Keeps two writers' file names of one second apart.


class EventFile:
  """A TensorBoard event file (events.out.tfevents.*) of scalars, made at the first write."""

  def __init__(self, directory: str):
    self.directory = directory
    self._file = None

  def write(self, step: int, scalars: dict) -> None:
    """One Event holding `scalars` (numbers only) at `step`."""
    from tensorboardX.proto import event_pb2, summary_pb2
    values = [summary_pb2.Summary.Value(tag=key, simple_value=float(value))
              for key, value in scalars.items()
              if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if not values:
      return
    events = [event_pb2.Event(wall_time=time.time(), step=int(step),
                              summary=summary_pb2.Summary(value=values))]
    if self._file is None:
      with storage.failures_named(self.directory):
        os.makedirs(self.directory, exist_ok=True)
      name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.'
              f'{next(_event_files)}')
      self._file = AppendFile(os.path.join(self.directory, name))
      events.insert(0, event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    self._file.append(b''.join(_tfrecord(event.SerializeToString()) for event in events))

  def sync(self) -> None:
    if self._file is not None:
      self._file.sync()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


def _tfrecord(data: bytes) -> bytes:
  """One TFRecord frame: length, its masked CRC-32C, the data, its masked CRC-32C."""
  from tensorboardX.record_writer import masked_crc32c
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data
          + struct.pack('<I', masked_crc32c(data)))


class MetricWriter:
  """Appends step records to metrics.jsonl and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, JSONL_NAME)
    self._file = None
    self._tensorboard = None
    if not enabled:
      return
    self._file = AppendFile(self.path)
    if tensorboard:
      try:
        import tensorboardX  # noqa: F401 (its protos encode the events)
      except ImportError:
        log.warning('tensorboardX is not installed: no TensorBoard event files '
                    '(metrics.jsonl is still written)')
      else:
        self._tensorboard = EventFile(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: dict) -> None:
    """Writes one record {'step': step, **scalars}."""
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: _clean(float(v)) if not isinstance(v, (int, str)) else v
                   for k, v in scalars.items()})
    self._file.append((json.dumps(record) + '\n').encode('utf-8'))
    if self._tensorboard is not None:
      self._tensorboard.write(step, scalars)

  def flush(self) -> None:
    """Puts every record written so far on the disk itself (called at each checkpoint; a
    killed process loses none of them either way, as each is in its file once written)."""
    for file in (self._file, self._tensorboard):
      if file is not None:
        file.sync()

  def close(self) -> None:
    for file in (self._file, self._tensorboard):
      if file is not None:
        file.close()
    self._file = self._tensorboard = None


def last_record_with(records: Iterable[dict], key: str) -> Optional[dict]:
  """The last record holding `key`, or None."""
  found = None
  for record in records:
    if key in record:
      found = record
  return found
