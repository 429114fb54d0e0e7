"""Image datasets read while training, not loaded whole: prepared shards or a raw image folder.

`open_images(data_dir, image_size)` returns a `StreamedDataset`: the class names, and per
split a random-access source of (label, encoded image) plus its length, all known from the
index (or the folder listing) without decoding a single image. The Grain pipeline
(grain_pipeline) decodes and augments the images while a run trains.

- Prepared shards (`data_dir/index.json`, see image_records): every shard the index lists
  is checked to exist and hold its records before training starts. Splits 'train' and
  'val' (or 'test').
- A raw folder in ImageFolder layout (`data_dir/<class>/<image>`, or `train/` and `val/`
  subfolders of that form): for small personal sets; the class list is read from the
  folder, and without a val folder a seeded, stratified fraction is held out.
"""
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from resnet_jax.data import image_records
from resnet_jax.errors import DatasetError

EVAL_SPLITS = ('val', 'test')  # The first a prepared dataset or a folder has is evaluated on.


class RecordSource:
  """(label, encoded image) by index over a split's ArrayRecord shards; picklable (workers)."""

  def __init__(self, paths: Sequence[str], num_classes: int):
    import grain  # Imported here: only streamed runs need it.
    self.paths, self.num_classes = tuple(paths), num_classes
    self._records = grain.sources.ArrayRecordDataSource(list(self.paths))

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> tuple[int, bytes]:
    label, encoded = image_records.decode_record(self._records[index])
    if label >= self.num_classes:
      raise DatasetError(f'record {index} of the shards {self.paths[0]}...: label {label}; '
                         f'expected a class index below {self.num_classes}, as the index says')
    return label, encoded

  def describe(self, index: int) -> str:
    return f'record {index} of the shards starting with {self.paths[0]}'


class FileSource:
  """(label, file bytes) by index over a list of image files; picklable (workers)."""

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


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedSplit:
  """One split read on demand: `source[i]` is (label, encoded image)."""
  source: object
  image_size: int

  def __len__(self) -> int:
    return len(self.source)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images the pipeline makes (not of the stored ones)."""
    return (self.image_size, self.image_size, 3)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedDataset:
  """A train and an evaluation split read while training, with their class names.

  Has the attributes of resnet_jax.data.Dataset that a run needs before its first batch
  (train, test, class_names, source, num_classes, image_shape), but no arrays.
  """
  train: StreamedSplit
  test: StreamedSplit
  class_names: tuple[str, ...]
  source: str
  # The cap on the stored images' shorter side the index states (prepared shards), else None.
  max_size: Optional[int] = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.train.image_shape


def open_images(data_dir: Optional[str], image_size: int, seed: int = 0) -> StreamedDataset:
  """The prepared shards in `data_dir`, or the raw image folder `data_dir`, ready to stream.

  Raises:
    DatasetError naming the file: a missing directory, an index that does not match its
    shards (missing, truncated or foreign shard), a folder without images or with one class.
  """
  if not data_dir:
    raise DatasetError("dataset 'images' needs data_dir: a directory prepared by "
                       'experiments/prepare_images.py, or an image folder (<class>/<image>)')
  if not os.path.isdir(data_dir):
    raise DatasetError(f'{data_dir}: no such directory; expected prepared shards '
                       f'({image_records.INDEX_NAME}) or an image folder')
  if image_records.has_index(data_dir):
    return _open_prepared(data_dir, image_size)
  return _open_folder(data_dir, image_size, seed)


def _open_prepared(data_dir: str, image_size: int) -> StreamedDataset:
  index = image_records.read_index(data_dir)
  evaluated = next((s for s in EVAL_SPLITS if s in index.splits), None)
  if 'train' not in index.splits or evaluated is None:
    raise DatasetError(f'{os.path.join(data_dir, image_records.INDEX_NAME)}: splits '
                       f'{sorted(index.splits)}; expected train and one of {EVAL_SPLITS}')
  splits = {}
  for name in ('train', evaluated):
    paths = image_records.shard_paths(data_dir, index, name)
    splits[name] = StreamedSplit(RecordSource(paths, len(index.classes)), image_size)
  max_size = index.storage.get('max_size')
  return StreamedDataset(
      train=splits['train'], test=splits[evaluated], class_names=index.classes,
      source=f'prepared images in {data_dir} ({len(splits["train"])} train, '
             f'{len(splits[evaluated])} {evaluated}, {len(index.classes)} classes)',
      max_size=max_size if isinstance(max_size, int) and max_size > 0 else None)


def _open_folder(data_dir: str, image_size: int, seed: int) -> StreamedDataset:
  from resnet_jax.data import image_files  # The folder conventions, shared with prepare_images.
  listing = image_files.list_image_folder(data_dir)
  splits = image_files.split_train_val(listing, seed=seed)
  if not splits.get('val'):
    raise DatasetError(f'image folder {data_dir!r}: no image to hold out for evaluation '
                       '(every class has one image); expected a val/ folder or more images')
  streams = {name: StreamedSplit(FileSource(*zip(*splits[name])), image_size)
             for name in ('train', 'val')}
  held_out = '' if listing.has_val_folder else (
      f', val held out: {image_files.DEFAULT_VAL_FRACTION:.0%} of each class, seed {seed}')
  return StreamedDataset(
      train=streams['train'], test=streams['val'], class_names=listing.classes,
      source=f'image folder {data_dir} ({len(streams["train"])} train, '
             f'{len(streams["val"])} val, {len(listing.classes)} classes{held_out})')
