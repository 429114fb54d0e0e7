"""Image datasets read while training, never loaded whole: prepared shards or an image folder.

`open_images(data_dir)` returns a Dataset whose splits are sources of encoded images
(resnet_jax.data.sources): the class names and the split sizes come from the index (or the
folder listing) without decoding a single image; the pipeline decodes them as it goes.

- Prepared shards (`data_dir/index.json`, see image_records): every shard the index lists
  is checked to exist and hold its records before training starts. Splits 'train' and
  'val' (or 'test').
- A raw folder in ImageFolder layout (`data_dir/<class>/<image>`, or `train/` and `val/`
  subfolders of that form): for small personal sets; the class list is read from the
  folder, and without a val folder a seeded, stratified fraction is held out.
"""
import os
from typing import Optional

from resnet_jax.data import image_records
from resnet_jax.data.sources import FileSource, RecordSource
from resnet_jax.data.types import Dataset
from resnet_jax.errors import DatasetError

EVAL_SPLITS = ('val', 'test')  # The first a prepared dataset or a folder has is evaluated on.


def open_images(data_dir: Optional[str], seed: int = 0) -> Dataset:
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
    return _open_prepared(data_dir)
  return _open_folder(data_dir, seed)


def _open_prepared(data_dir: str) -> Dataset:
  index = image_records.read_index(data_dir)
  evaluated = next((s for s in EVAL_SPLITS if s in index.splits), None)
  if 'train' not in index.splits or evaluated is None:
    raise DatasetError(f'{os.path.join(data_dir, image_records.INDEX_NAME)}: splits '
                       f'{sorted(index.splits)}; expected train and one of {EVAL_SPLITS}')
  splits = {}
  for name in ('train', evaluated):
    paths = image_records.shard_paths(data_dir, index, name)
    splits[name] = RecordSource(paths, len(index.classes))
  max_size = index.storage.get('max_size')
  return Dataset(
      train=splits['train'], test=splits[evaluated], class_names=index.classes,
      source=f'prepared images in {data_dir} ({len(splits["train"])} train, '
             f'{len(splits[evaluated])} {evaluated}, {len(index.classes)} classes)',
      max_size=max_size if isinstance(max_size, int) and max_size > 0 else None,
      eval_split=evaluated)


def _open_folder(data_dir: str, seed: int) -> Dataset:
  from resnet_jax.data import image_files  # The folder conventions, shared with prepare_images.
  listing = image_files.list_image_folder(data_dir)
  splits = image_files.split_train_val(listing, seed=seed)
  if not splits.get('val'):
    raise DatasetError(f'image folder {data_dir!r}: no image to hold out for evaluation '
                       '(every class has one image); expected a val/ folder or more images')
  streams = {name: FileSource(*zip(*splits[name])) for name in ('train', 'val')}
  held_out = '' if listing.has_val_folder else (
      f', val held out: {image_files.DEFAULT_VAL_FRACTION:.0%} of each class, seed {seed}')
  return Dataset(
      train=streams['train'], test=streams['val'], class_names=listing.classes,
      source=f'image folder {data_dir} ({len(streams["train"])} train, '
             f'{len(streams["val"])} val, {len(listing.classes)} classes{held_out})',
      eval_split='val')
