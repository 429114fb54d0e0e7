"""Image datasets read while training, never loaded whole: prepared shards or an image folder.

`open_images(data_dir)` returns a Dataset whose splits are sources of encoded images
(resnet_jax.data.sources): the class names and the split sizes come from the index (or the
folder listing) without decoding a single image; the pipeline decodes them as it goes.

- Prepared shards (`data_dir/index.json`, see image_records): before training starts every
  shard the index lists is checked to exist and have its byte size and record count, and
  its SHA-256 where the split is small enough (`image_records.shard_paths`). Splits 'train'
  and 'val' (or 'test'). The dataset's identity is the SHA-256 of index.json, which holds
  every shard's checksum.
- A raw folder in ImageFolder layout (`data_dir/<class>/<image>`, or `train/` and `val/`
  subfolders of that form): for small personal sets; the class list is read from the
  folder, and without a val folder a seeded, stratified fraction is held out. Its identity
  is a digest of the listing (`image_files.listing_identity`).

With `eval_only` only the evaluation split is opened and checked (evaluating a run needs no
training shards); the train split is then `sources.Unopened`, empty, so that nothing trains
on it.
"""
import os
from typing import Optional

from resnet_jax.data import image_records
from resnet_jax.data.sources import FileSource, RecordSource, Unopened
from resnet_jax.data.types import Dataset
from resnet_jax.errors import DatasetError

EVAL_SPLITS = ('val', 'test')  # The first a prepared dataset or a folder has is evaluated on.


def open_images(data_dir: Optional[str], seed: int = 0, eval_only: bool = False) -> Dataset:
  """The prepared shards in `data_dir`, or the raw image folder `data_dir`, ready to stream.

  Args:
    data_dir: prepared shards (index.json) or an image folder.
    seed: the seed of a folder's held-out val split.
    eval_only: open the evaluation split alone (see the module docstring).

  Raises:
    DatasetError naming the file: a missing directory, an index that does not match its
    shards (missing, truncated, damaged or foreign shard: the message says how to repair
    it), a folder without images or with one class.
  """
  if not data_dir:
    raise DatasetError("dataset 'images' needs data_dir: a directory prepared by "
                       'experiments/prepare_images.py, or an image folder (<class>/<image>)')
  if not os.path.isdir(data_dir):
    raise DatasetError(f'{data_dir}: no such directory; expected prepared shards '
                       f'({image_records.INDEX_NAME}) or an image folder')
  if image_records.has_index(data_dir):
    return _open_prepared(data_dir, eval_only)
  return _open_folder(data_dir, seed, eval_only)


def _open_prepared(data_dir: str, eval_only: bool) -> Dataset:
  index = image_records.read_index(data_dir)
  evaluated = next((s for s in EVAL_SPLITS if s in index.splits), None)
  if ('train' not in index.splits and not eval_only) or evaluated is None:
    raise DatasetError(f'{os.path.join(data_dir, image_records.INDEX_NAME)}: splits '
                       f'{sorted(index.splits)}; expected train and one of {EVAL_SPLITS}')
  splits = {}
  for name in (evaluated,) if eval_only else ('train', evaluated):
    paths = image_records.shard_paths(data_dir, index, name)
    splits[name] = RecordSource(paths, len(index.classes), index.splits[name].records_per_shard)
  train = splits.get('train') or Unopened(f'the train split of {data_dir}')
  counts = f'{len(train)} train, ' if not eval_only else ''
  note = '' if index.has_checksums else (
      '; its index carries no checksums (an earlier version prepared it): shards counted, '
      'not verified')
  max_size = index.storage.get('max_size')
  return Dataset(
      train=train, test=splits[evaluated], class_names=index.classes,
      source=f'prepared images in {data_dir} ({counts}{len(splits[evaluated])} {evaluated}, '
             f'{len(index.classes)} classes{note})',
      max_size=max_size if isinstance(max_size, int) and max_size > 0 else None,
      eval_split=evaluated, identity=index.identity)


def _open_folder(data_dir: str, seed: int, eval_only: bool) -> Dataset:
  from resnet_jax.data import image_files  # The folder conventions, shared with prepare_images.
  listing = image_files.list_image_folder(data_dir)
  splits = image_files.split_train_val(listing, seed=seed)
  if not splits.get('val'):
    raise DatasetError(f'image folder {data_dir!r}: no image to hold out for evaluation '
                       '(every class has one image); expected a val/ folder or more images')
  streams = {name: FileSource(*zip(*splits[name])) for name in ('train', 'val')}
  held_out = '' if listing.has_val_folder else (
      f', val held out: {image_files.DEFAULT_VAL_FRACTION:.0%} of each class, seed {seed}')
  train = Unopened(f'the train split of {data_dir}') if eval_only else streams['train']
  counts = f'{len(train)} train, ' if not eval_only else ''
  return Dataset(
      train=train, test=streams['val'], class_names=listing.classes,
      source=f'image folder {data_dir} ({counts}{len(streams["val"])} val, '
             f'{len(listing.classes)} classes{held_out})',
      eval_split='val', identity=image_files.listing_identity(data_dir, splits,
                                                              listing.classes))
