"""Sources of encoded images, read while training: prepared ArrayRecord shards and image files.

Each is a source as resnet_jax.data.types describes it: `source[i]` is (label, the encoded
image's bytes), decoded by the pipeline; both are picklable, so Grain's worker processes
read them as the training process would.
"""
from typing import Optional, Sequence

import numpy as np

from resnet_jax.data import image_records
from resnet_jax.errors import DatasetError


class RecordSource:
  """(label, encoded image) by index over a split's ArrayRecord shards.

  A record that cannot be read (a shard damaged after the start-up check, or beyond what it
  checks: see image_records.shard_paths) is a DatasetError naming the shard and the record
  in it, and what to do; it is picklable, so it reaches the training process from Grain's
  workers as it is.

  Args:
    paths: the split's shards, in order.
    num_classes: labels must be below it.
    records_per_shard: each shard's record count, as the index lists them (default: read
      from the shards).
  """

  def __init__(self, paths: Sequence[str], num_classes: int,
               records_per_shard: Optional[Sequence[int]] = None):
    import grain  # Imported here: only runs on prepared shards need it.
    self.paths, self.num_classes = tuple(paths), num_classes
    self._records = grain.sources.ArrayRecordDataSource(list(self.paths))
    if records_per_shard is None:
      records_per_shard = [_num_records(path) for path in self.paths]
    self._ends = np.cumsum(np.asarray(records_per_shard, np.int64))

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> tuple[int, bytes]:
    try:
      record = self._records[index]
    except Exception as error:  # Riegeli raises RuntimeError ('hash mismatch', truncation).
      if not 0 <= index < len(self):
        raise
      raise DatasetError(f'{self.describe(index)}: cannot be read ({error}); expected the '
                         f'shard as prepared: {image_records.REPAIR}') from error
    label, encoded = image_records.decode_record(record)
    if label >= self.num_classes:
      raise DatasetError(f'{self.describe(index)}: label {label}; expected a class index '
                         f'below {self.num_classes}, as the index says')
    return label, encoded

  def shard_of(self, index: int) -> tuple[str, int]:
    """(the shard's path, the record's position in it) of the split's record `index`."""
    shard = int(np.searchsorted(self._ends, index, side='right'))
    start = int(self._ends[shard - 1]) if shard else 0
    return self.paths[shard], index - start

  def describe(self, index: int) -> str:
    path, position = self.shard_of(index)
    return f'{path}: record {position} (record {index} of the shards of its split)'


def _num_records(path: str) -> int:
  from array_record.python import array_record_module
  reader = array_record_module.ArrayRecordReader(path)
  try:
    return reader.num_records()
  finally:
    reader.close()


class FileSource:
  """(label, file bytes) by index over a list of image files."""

  def __init__(self, paths: Sequence[str], labels: Sequence[int]):
    self.paths, self.labels = tuple(paths), np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> tuple[int, bytes]:
    path = self.paths[index]
    try:
      with open(path, 'rb') as f:
        return int(self.labels[index]), f.read()
    except OSError as error:
      raise DatasetError(f'{path}: cannot be read ({error}); expected an image file of the '
                         'folder the run started with') from error

  def describe(self, index: int) -> str:
    return self.paths[index]


class Unopened:
  """A split that was not opened (a dataset opened for evaluation only): no records, and
  reading one is an error, so nothing can train on it by mistake."""

  def __init__(self, what: str):
    self.what = what

  def __len__(self) -> int:
    return 0

  def __getitem__(self, index: int):
    raise DatasetError(f'{self.what}: not opened (the dataset was opened for evaluation only); '
                       'expected a dataset opened for training')

  def describe(self, index: int) -> str:
    return self.what
