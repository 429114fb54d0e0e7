"""The on-disk format of a prepared image dataset: ArrayRecord shards and their JSON index.

A prepared dataset is a directory holding `index.json` and, per split, shards named
`<split>-00000-of-00008.array_record`. Each record is one example: its class as a 4-byte
little-endian unsigned integer, then the encoded image (JPEG as prepared; any format Pillow
reads is accepted). The index says what a reader needs to trust the shards: the class names
in sorted order, per split the shard files with their record counts and the count per class,
and how the images were stored (encoding, quality, the cap on the shorter side).

The writer (`prepare_images`) and the reader (the Grain pipeline) share only this module.
"""
import dataclasses
import json
import os
import struct
from typing import Mapping, Sequence

from resnet_jax import storage
from resnet_jax.errors import DatasetError

INDEX_NAME = 'index.json'
FORMAT = 'resnet_jax.image_records/1'
SHARD_SUFFIX = '.array_record'
_LABEL = struct.Struct('<I')


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f'{split}-{shard:05d}-of-{num_shards:05d}{SHARD_SUFFIX}'


def encode_record(label: int, image_bytes: bytes) -> bytes:
  return _LABEL.pack(label) + image_bytes


def decode_record(record: bytes) -> tuple[int, bytes]:
  """(label, encoded image) of one record."""
  if len(record) <= _LABEL.size:
    raise DatasetError(f'an image record of {len(record)} bytes; expected a 4-byte label '
                       'followed by an encoded image')
  return _LABEL.unpack_from(record)[0], record[_LABEL.size:]


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """One split's shards (file names, relative to the dataset directory) and counts."""
  shards: tuple[str, ...]
  records_per_shard: tuple[int, ...]
  count_per_class: tuple[int, ...]

  @property
  def num_examples(self) -> int:
    return sum(self.records_per_shard)


@dataclasses.dataclass(frozen=True)
class ImageRecordIndex:
  """What `index.json` holds."""
  classes: tuple[str, ...]
  splits: Mapping[str, SplitIndex]
  storage: Mapping[str, object]  # e.g. {'encoding': 'jpeg', 'quality': 95, 'max_size': 256}

  def to_json(self) -> dict:
    return {
        'format': FORMAT,
        'classes': list(self.classes),
        'splits': {name: {'shards': list(split.shards),
                          'records_per_shard': list(split.records_per_shard),
                          'count_per_class': list(split.count_per_class)}
                   for name, split in self.splits.items()},
        'storage': dict(self.storage),
    }


def write_index(data_dir: str, index: ImageRecordIndex) -> None:
  """Writes `index.json` atomically: a reader sees the old index or the new, never half."""
  storage.write_json_atomic(os.path.join(data_dir, INDEX_NAME), index.to_json())


def has_index(data_dir: str) -> bool:
  return os.path.isfile(os.path.join(data_dir, INDEX_NAME))


def read_index(data_dir: str) -> ImageRecordIndex:
  """Reads and checks `index.json`; DatasetError naming the file and field otherwise."""
  path = os.path.join(data_dir, INDEX_NAME)
  try:
    with open(path, encoding='utf-8') as f:
      raw = json.load(f)
  except FileNotFoundError as error:
    raise DatasetError(f'{path}: no such file; expected the index of a dataset prepared by '
                       'experiments/prepare_images.py') from error
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise DatasetError(f'{path}: cannot be read as JSON ({error}); expected the index '
                       'written by experiments/prepare_images.py') from error
  if not isinstance(raw, dict) or raw.get('format') != FORMAT:
    found = raw.get('format') if isinstance(raw, dict) else type(raw).__name__
    raise DatasetError(f'{path}: format {found!r}; expected {FORMAT!r}')
  classes = _field(raw, 'classes', list, path)
  if len(classes) < 2 or list(classes) != sorted(set(classes)):
    raise DatasetError(f'{path}: classes {classes[:5]!r}... ({len(classes)}); expected two or '
                       'more distinct class names in sorted order')
  splits = {}
  for name, split in _field(raw, 'splits', dict, path).items():
    where = f'splits.{name}'
    shards = tuple(_field(split, 'shards', list, path, where))
    records = tuple(_field(split, 'records_per_shard', list, path, where))
    per_class = tuple(_field(split, 'count_per_class', list, path, where))
    if len(records) != len(shards) or len(per_class) != len(classes) or \
        sum(records) != sum(per_class):
      raise DatasetError(f'{path}: {where} lists {len(shards)} shards with {len(records)} '
                         f'record counts (total {sum(records)}) and {len(per_class)} class '
                         f'counts (total {sum(per_class)}); expected one record count per '
                         f'shard, one count per class ({len(classes)}) and equal totals')
    splits[name] = SplitIndex(shards, records, per_class)
  return ImageRecordIndex(tuple(classes), splits, _field(raw, 'storage', dict, path))


def _field(obj: dict, key: str, kind: type, path: str, where: str = ''):
  name = f'{where}.{key}' if where else key
  if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
    found = type(obj.get(key)).__name__ if isinstance(obj, dict) else type(obj).__name__
    raise DatasetError(f'{path}: field {name!r} is {found}; expected a {kind.__name__}')
  return obj[key]


def shard_paths(data_dir: str, index: ImageRecordIndex, split: str) -> list[str]:
  """The split's shard paths, each checked to exist and to hold the records the index says.

  Raises DatasetError naming the shard that is missing, unreadable or of the wrong length
  (a truncated copy, or a shard from another preparation).
  """
  if split not in index.splits:
    raise DatasetError(f'{os.path.join(data_dir, INDEX_NAME)}: no split {split!r}; found '
                       f'{sorted(index.splits)}')
  from array_record.python import array_record_module  # Only readers of shards need it.
  paths = []
  entry = index.splits[split]
  for name, expected in zip(entry.shards, entry.records_per_shard):
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
      raise DatasetError(f'{path}: no such shard; expected {expected} records of split '
                         f'{split!r}, as {INDEX_NAME} lists')
    try:
      reader = array_record_module.ArrayRecordReader(path)
      found = reader.num_records()
      reader.close()
    except Exception as error:  # array_record raises RuntimeError/ValueError on bad files.
      raise DatasetError(f'{path}: cannot be read as an ArrayRecord shard ({error}); '
                         f'expected {expected} records of split {split!r}') from error
    if found != expected:
      raise DatasetError(f'{path}: {found} records; expected {expected}, as {INDEX_NAME} '
                         'lists (a truncated or foreign shard)')
    paths.append(path)
  return paths


def write_shard(path: str, records: Sequence[bytes]) -> None:
  """Writes one shard under a temporary name and renames it: a shard on disk is complete."""
  from array_record.python import array_record_module
  temporary = path + '.tmp'
  writer = array_record_module.ArrayRecordWriter(temporary, 'group_size:1')
  try:
    for record in records:
      writer.write(record)
  finally:
    writer.close()
  os.replace(temporary, path)
