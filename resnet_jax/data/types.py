"""What every source of data is: a random-access list of (label, image) records, in two splits.

A *source* is any object with `len(source)`, `source[i] -> (label, image)` and
`source.describe(i)` (where record i comes from, for error messages); `image` is either a
uint8 array [H, W, 3] or the bytes of an encoded image (decoded by the pipeline). Sources
are picklable, since Grain's worker processes read them. The in-memory `Split` is one; the
prepared shards and image folders (resnet_jax.data.sources) are the others. The one input
pipeline (resnet_jax.data.pipeline) reads every source the same way.
"""
import dataclasses
import hashlib
from typing import Optional, Protocol

import numpy as np

from resnet_jax.errors import DatasetError


class Source(Protocol):
  """A random-access list of (label, image) records."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> tuple[int, object]: ...

  def describe(self, index: int) -> str: ...


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """A split held in host memory: the source of arrays every in-memory loader returns.

  Attributes:
    images: uint8 array [N, H, W, C], pixel values as stored (no scaling).
    labels: int32 array [N], class indices in [0, num_classes).
  """
  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    # Loaders build these from validated files; a bad Split is a bug in a loader,
    # but it is cheap to catch here, before it reaches a device.
    images, labels = self.images, self.labels
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
      raise DatasetError(
          f'Split.images: found {_describe(images)}, expected a uint8 array [N, H, W, C]')
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
      raise DatasetError(f'Split.labels: found {_describe(labels)}, expected an int32 array [N]')
    if len(images) != len(labels):
      raise DatasetError(
          f'Split: {len(images)} images but {len(labels)} labels, expected equal counts')

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
    return int(self.labels[index]), self.images[index]

  def describe(self, index: int) -> str:
    return f'example {index} of an in-memory split'

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.images.shape[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train and an evaluation split with the names of their classes.

  Attributes:
    train: the training split (a source).
    test: the evaluation split (a source; 'val' or 'test', whichever the data has).
    class_names: one name per class index.
    source: a human-readable note saying where the data came from, e.g.
      "real SIGNS from /data/signs" or "prepared images in /data/flowers (...)".
    max_size: the cap on the stored images' shorter side, where the data state one
      (prepared shards); None otherwise.
    eval_split: what the evaluation split is called ('test', or 'val' where the data say
      so), for reports.
    identity: a digest of what the data hold, where the loader can state one cheaply
      (prepared shards: their index, which holds every shard's checksum; an image folder:
      its listing); None means `dataset_identity` hashes the arrays.
  """
  train: Source
  test: Source
  class_names: tuple[str, ...]
  source: str
  max_size: Optional[int] = None
  eval_split: str = 'test'
  identity: Optional[str] = None

  def __post_init__(self):
    for name, split in (('train', self.train), ('test', self.test)):
      if not isinstance(split, Split):
        continue
      if isinstance(self.train, Split) and split.image_shape != self.train.image_shape:
        raise DatasetError(f'Dataset.{name}: images of shape {split.image_shape}, expected the '
                           f'train images\' shape {self.train.image_shape}')
      if len(split) and (split.labels.min() < 0 or split.labels.max() >= len(self.class_names)):
        raise DatasetError(f'Dataset.{name}: labels span [{split.labels.min()}, '
                           f'{split.labels.max()}], expected [0, {len(self.class_names) - 1}] for '
                           f'{len(self.class_names)} class names')

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> Optional[tuple[int, int, int]]:
    """(H, W, C) of every stored image where they all share one (arrays), else None (encoded
    images of any size, resized by the pipeline)."""
    return self.train.image_shape if isinstance(self.train, Split) else None


def dataset_identity(dataset: Dataset) -> Optional[str]:
  """What a run records to be bound to its data: `dataset.identity`, else for in-memory
  splits the SHA-256 of their class names, labels and pixels; None for other sources."""
  if dataset.identity is not None:
    return dataset.identity
  if not (isinstance(dataset.train, Split) and isinstance(dataset.test, Split)):
    return None
  hasher = hashlib.sha256(repr(tuple(dataset.class_names)).encode())
  for split in (dataset.train, dataset.test):
    hasher.update(repr(split.images.shape).encode())
    hasher.update(memoryview(np.ascontiguousarray(split.labels)).cast('B'))
    hasher.update(memoryview(np.ascontiguousarray(split.images)).cast('B'))
  return 'sha256:' + hasher.hexdigest()


def _describe(value) -> str:
  if isinstance(value, np.ndarray):
    return f'{value.dtype} array of shape {value.shape}'
  return type(value).__name__
