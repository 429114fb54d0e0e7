"""The in-memory form every loader returns: uint8 images and int32 labels, split in two."""
import dataclasses

import numpy as np

from resnet_jax.errors import DatasetError


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split of a dataset, held in host memory.

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

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.images.shape[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train and a test split with the names of their classes.

  Attributes:
    train: the training split.
    test: the evaluation split.
    class_names: one name per class index.
    source: a human-readable note saying where the data came from, e.g.
      "real SIGNS from /data/signs" or "synthetic SIGNS (seed 0) cached in /x".
  """
  train: Split
  test: Split
  class_names: tuple[str, ...]
  source: str

  def __post_init__(self):
    for name, split in (('train', self.train), ('test', self.test)):
      if split.image_shape != self.train.image_shape:
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
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return self.train.image_shape


def _describe(value) -> str:
  if isinstance(value, np.ndarray):
    return f'{value.dtype} array of shape {value.shape}'
  return type(value).__name__
