"""The on-disk format of a prepared image dataset: ArrayRecord shards and their JSON index.

A prepared dataset is a directory holding `index.json` and, per split, shards named
`<split>-00000-of-00008.array_record`. Each record is one example: its class as a 4-byte
little-endian unsigned integer, then the encoded image (JPEG as prepared; any format Pillow
reads is accepted). The index says what a reader needs to trust the shards: the class names
in sorted order, per split the shard files with their record counts, byte sizes and SHA-256
and the count per class, and how the images were stored (encoding, quality, the cap on the
shorter side). The index is written last: it is the dataset's commit, and the SHA-256 of its
bytes is the dataset's identity.

Byte sizes and checksums were added to the format without changing its name: an index
written before them opens as it did (record counts checked, nothing verified), and older
readers ignore them. A reader checks, before training starts, that every shard exists and
has the size and record count its index says (`shard_paths`), and its full SHA-256 where the
split is at most `FULL_CHECK_BYTES`; a shard damaged in a way only a read finds is named
when the read fails (resnet_jax.data.sources). Rerunning prepare_images repairs either.

The writer (`prepare_images`) and the reader (the Grain pipeline) share only this module.
"""
import dataclasses
import hashlib
import json
import os
import struct
from typing import Mapping, Optional, Sequence

from resnet_jax import storage
from resnet_jax.errors import DatasetError

INDEX_NAME = 'index.json'
FORMAT = 'resnet_jax.image_records/1'
SHARD_SUFFIX = '.array_record'
# A split of at most this many bytes has every shard's SHA-256 checked when it is opened
# (a second or less of hashing; see BENCHMARKS.md); larger ones have sizes and counts checked.
FULL_CHECK_BYTES = 1 << 30
# What to do about a damaged or missing shard.
REPAIR = ('rerun experiments/prepare_images.py with the same SRC, OUT and options: it '
          're-checks every shard and rewrites the damaged ones')
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
  """One split's shards (file names, relative to the dataset directory) and counts.

  `shard_bytes` and `sha256` (one per shard) are None in an index written without them.
  """
  shards: tuple[str, ...]
  records_per_shard: tuple[int, ...]
  count_per_class: tuple[int, ...]
  shard_bytes: Optional[tuple[int, ...]] = None
  sha256: Optional[tuple[str, ...]] = None

  @property
  def num_examples(self) -> int:
    return sum(self.records_per_shard)

  def to_json(self) -> dict:
    entry = {'shards': list(self.shards), 'records_per_shard': list(self.records_per_shard),
             'count_per_class': list(self.count_per_class)}
    if self.shard_bytes is not None:
      entry['bytes'] = list(self.shard_bytes)
    if self.sha256 is not None:
      entry['sha256'] = list(self.sha256)
    return entry


@dataclasses.dataclass(frozen=True)
class ImageRecordIndex:
  """What `index.json` holds; `identity` ('sha256:' + the digest of the file's bytes) is set
  when it was read from a file."""
  classes: tuple[str, ...]
  splits: Mapping[str, SplitIndex]
  storage: Mapping[str, object]  # e.g. {'encoding': 'jpeg', 'quality': 95, 'max_size': 256}
  identity: Optional[str] = dataclasses.field(default=None, compare=False)

  @property
  def has_checksums(self) -> bool:
    return all(split.sha256 is not None and split.shard_bytes is not None
               for split in self.splits.values())

  def to_json(self) -> dict:
    return {
        'format': FORMAT,
        'classes': list(self.classes),
        'splits': {name: split.to_json() for name, split in self.splits.items()},
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
    with open(path, 'rb') as f:
      data = f.read()
    raw = json.loads(data.decode('utf-8'))
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
    sizes, sums = _optional_list(split, 'bytes', int, shards, path, where), _optional_list(
        split, 'sha256', str, shards, path, where)
    splits[name] = SplitIndex(shards, records, per_class, sizes, sums)
  return ImageRecordIndex(tuple(classes), splits, _field(raw, 'storage', dict, path),
                          identity='sha256:' + hashlib.sha256(data).hexdigest())


def _optional_list(split: dict, key: str, kind: type, shards: tuple, path: str,
                   where: str) -> Optional[tuple]:
  """The split's per-shard `key` list, or None where the index has none."""
  if key not in split:
    return None
  values = split[key]
  if not isinstance(values, list) or len(values) != len(shards) or not all(
      isinstance(value, kind) and not isinstance(value, bool) for value in values):
    raise DatasetError(f'{path}: field {where}.{key!r} is {values!r:.80}; expected a list of '
                       f'{len(shards)} {kind.__name__} values, one per shard')
  return tuple(values)


def _field(obj: dict, key: str, kind: type, path: str, where: str = ''):
  name = f'{where}.{key}' if where else key
  if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
    found = type(obj.get(key)).__name__ if isinstance(obj, dict) else type(obj).__name__
    raise DatasetError(f'{path}: field {name!r} is {found}; expected a {kind.__name__}')
  return obj[key]


def shard_paths(data_dir: str, index: ImageRecordIndex, split: str,
                full_check: Optional[bool] = None) -> list[str]:
  """The split's shard paths, each checked against the index: it exists, has the byte size
  and the record count the index says, and (with `full_check`; by default where the split
  is at most FULL_CHECK_BYTES) its SHA-256 is the index's. An index without sizes and
  checksums (an earlier version's) has the record counts checked.

  Raises DatasetError naming the shard that is missing, unreadable, of the wrong size or
  length (a truncated copy, or a shard from another preparation) or with other bytes, what
  was found and expected, and what to do (REPAIR).
  """
  if split not in index.splits:
    raise DatasetError(f'{os.path.join(data_dir, INDEX_NAME)}: no split {split!r}; found '
                       f'{sorted(index.splits)}')
  from array_record.python import array_record_module  # Only readers of shards need it.
  entry = index.splits[split]
  sizes = entry.shard_bytes or (None,) * len(entry.shards)
  paths = [os.path.join(data_dir, name) for name in entry.shards]
  for path, expected, size in zip(paths, entry.records_per_shard, sizes):
    try:
      found_size = os.stat(path).st_size
    except FileNotFoundError:
      found_size = None
    if found_size is None or not os.path.isfile(path):
      raise DatasetError(f'{path}: no such shard; expected {expected} records of split '
                         f'{split!r}, as {INDEX_NAME} lists: {REPAIR}')
    if size is not None and found_size != size:
      raise DatasetError(f'{path}: {found_size} bytes; expected {size}, as {INDEX_NAME} lists '
                         f'(a truncated, damaged or foreign shard): {REPAIR}')
    try:
      reader = array_record_module.ArrayRecordReader(path)
      found = reader.num_records()
      reader.close()
    except Exception as error:  # array_record raises RuntimeError/ValueError on bad files.
      raise DatasetError(f'{path}: cannot be read as an ArrayRecord shard ({error}); '
                         f'expected {expected} records of split {split!r}: {REPAIR}') from error
    if found != expected:
      raise DatasetError(f'{path}: {found} records; expected {expected}, as {INDEX_NAME} '
                         f'lists (a truncated or foreign shard): {REPAIR}')
  if entry.sha256 is not None and entry.shard_bytes is not None and (
      full_check or (full_check is None and sum(entry.shard_bytes) <= FULL_CHECK_BYTES)):
    for path, digest in zip(paths, entry.sha256):
      found = file_sha256(path)
      if found != digest:
        raise DatasetError(f'{path}: SHA-256 {found[:16]}...; expected {digest[:16]}..., as '
                           f'{INDEX_NAME} lists (bytes changed inside the shard): {REPAIR}')
  return paths


def file_sha256(path: str) -> str:
  """The SHA-256 of a file's bytes, as hex."""
  hasher = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      hasher.update(block)
  return hasher.hexdigest()


def write_shard(path: str, records: Sequence[bytes]) -> None:
  """Writes one shard under a temporary name, flushes it to disk and renames it: a shard on
  disk is complete. A write that fails for lack of space or permission is a StorageError
  naming the shard and the free space; the temporary file is removed however it fails."""
  from array_record.python import array_record_module
  temporary = path + '.tmp'
  try:
    writer = array_record_module.ArrayRecordWriter(temporary, 'group_size:1')
    try:
      for record in records:
        writer.write(record)
    finally:
      writer.close()
    with open(temporary, 'rb') as f:
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException as error:
    try:
      os.remove(temporary)
    except OSError:
      pass
    failure = storage.write_failure(path, error)  # array_record says it in a RuntimeError.
    if failure is None or failure is error:
      raise
    raise failure from error

