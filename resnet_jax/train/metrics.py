"""Metric writers: `metrics.jsonl` (one JSON object per step) and TensorBoard event files.

Only process 0 writes. Each line is flushed as it is written, so a killed run loses at most
the line being written; on resume, `truncate_jsonl` drops every line past the restored
step and any torn line, and ends every kept line with its newline (rewriting the file
atomically), so that the file is again one JSON object per line, each step once, before
the resumed run appends to it.

TensorBoard events are written by tensorboardX's background thread, whose own flush() does
not wait for the events still queued; `MetricWriter.flush` (called at each checkpoint)
therefore closes the event file, which drains the queue, and the next event starts a new
file. So TensorBoard keeps, after a kill -9, every step that metrics.jsonl keeps.
"""
import json
import logging
import math
import os
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


class MetricWriter:
  """Appends step records to metrics.jsonl and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, JSONL_NAME)
    self._file = None
    self._tensorboard = None
    self._summary_writer_class = None
    self._event_files = 0
    self._tensorboard_dir = os.path.join(workdir, 'tensorboard')
    if not enabled:
      return
    self._file = open(self.path, 'a')
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError:
        log.warning('tensorboardX is not installed: no TensorBoard event files '
                    '(metrics.jsonl is still written)')
      else:
        self._summary_writer_class = SummaryWriter
        self._open_event_file()

  def _open_event_file(self) -> None:
    # Event file names hold the time in seconds: the suffix keeps two files of one second
    # (one per flush) apart.
    self._event_files += 1
    self._tensorboard = self._summary_writer_class(
        self._tensorboard_dir, filename_suffix=f'.{os.getpid()}.{self._event_files}')

  def write(self, step: int, scalars: dict) -> None:
    """Writes one record {'step': step, **scalars}."""
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: _clean(float(v)) if not isinstance(v, (int, str)) else v
                   for k, v in scalars.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    if self._summary_writer_class is not None:
      if self._tensorboard is None:
        self._open_event_file()
      for key, value in scalars.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          self._tensorboard.add_scalar(key, value, int(step))

  def flush(self) -> None:
    """Puts every event written so far into its file on disk (see the module docstring)."""
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None


def last_record_with(records: Iterable[dict], key: str) -> Optional[dict]:
  """The last record holding `key`, or None."""
  found = None
  for record in records:
    if key in record:
      found = record
  return found
