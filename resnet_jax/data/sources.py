"""Sources of encoded images, read while training: prepared ArrayRecord shards and image files.

Each is a source as resnet_jax.data.types describes it: `source[i]` is (label, the encoded
image's bytes), decoded by the pipeline; both are picklable, so Grain's worker processes
read them as the training process would.
"""
from typing import Sequence

import numpy as np

from resnet_jax.data import image_records
from resnet_jax.errors import DatasetError


class RecordSource:
  """(label, encoded image) by index over a split's ArrayRecord shards."""

  def __init__(self, paths: Sequence[str], num_classes: int):
    import grain  # Imported here: only runs on prepared shards need it.
    self.paths, self.num_classes = tuple(paths), num_classes
    self._records = grain.sources.ArrayRecordDataSource(list(self.paths))

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> tuple[int, bytes]:
    label, encoded = image_records.decode_record(self._records[index])
    if label >= self.num_classes:
      raise DatasetError(f'{self.describe(index)}: label {label}; expected a class index '
                         f'below {self.num_classes}, as the index says')
    return label, encoded

  def describe(self, index: int) -> str:
    return f'record {index} of the shards starting with {self.paths[0]}'


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
