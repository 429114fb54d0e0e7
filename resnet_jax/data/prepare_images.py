"""Converting an image folder into a prepared dataset: ArrayRecord shards and index.json.

`prepare_images(src, out, options)` lists SRC (ImageFolder layout, see `image_files`), holds out a
seeded, stratified validation split when SRC has no val folder, shuffles each split with
the seed, cuts it into shards and writes every image as `image_files.stored_jpeg` gives it
(upright RGB, shorter side at most `max_size`, JPEG at quality 95), in parallel processes.
A file that cannot be used is skipped and listed with its reason in OUT/bad_files.txt.

One writer at a time: the conversion holds an OS lock on OUT/.lock (resnet_jax.dir_lock)
from before it looks at OUT until it ends, so a second prepare_images on the same OUT, with
any options, is refused at once (WorkdirBusyError naming the holder), and a writer that
dies (kill -9 included) leaves no claim behind; the lock file is removed when it ends.

The same SRC (names, sizes, modification times) and options give the same plan: which file
goes into which shard, in which order. Its SHA-256 (the plan digest) is what makes a rerun
safe. While converting, OUT/.prepare/ holds the plan and, per finished shard, a note with
the shard's SHA-256; a rerun of an interrupted conversion with the same plan keeps every
shard whose bytes still match its note and converts the rest. At the end bad_files.txt and
index.json (per shard its byte size and SHA-256; its `storage` records the plan digest) are
written and .prepare/ is removed. index.json is the commit: it is removed before any shard
is written or replaced and written last, so a reader never finds an index beside shards of
another conversion. A rerun of a finished conversion checks every shard against the index's
SHA-256 and converts again those that are missing or differ (`shards_repaired`). An OUT
holding shards or an index of another plan is refused unless `overwrite`; then only files
this module writes are removed (index.json first, then shards, their temporaries,
bad_files.txt, .prepare/). Shards are written under a temporary name, flushed and renamed
(`image_records.write_shard`), and encoding is deterministic, so the same input gives
byte-identical shards. A write that fails for lack of space or permission is a
StorageError naming the file and the free space, and leaves no temporary file.

What OUT holds and who may touch it (the lock, which files are ours, .prepare/, the checks of
a finished conversion, bad_files.txt) is kept by `prepared_out`; this module plans and converts.
The library never prints: progress goes to the `progress(done, total)` callback.
"""
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
from typing import Callable, Sequence

import numpy as np
import PIL

from resnet_jax import storage
from resnet_jax.data import image_files, image_records, prepared_out
from resnet_jax.data.prepared_out import BAD_FILES_NAME
from resnet_jax.errors import BadImageError, ConfigError, DatasetError

DEFAULT_MAX_SIZE = 256
DEFAULT_SHARD_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  """One shard to write: its split, file name and the (path, label) of its images in order."""
  split: str
  name: str
  examples: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """What the shards hold: with SRC's files, these make the plan and its digest.

  Attributes:
    max_size: the cap on the shorter side of stored images (never enlarged).
    val_fraction: the share of each class held out as the 'val' split when SRC has no val
      folder (default `image_files.DEFAULT_VAL_FRACTION`; 0: no val split); see
      `image_files.split_train_val`.
    seed: the seed of the holdout and of the order of the images in the shards.
    shard_size: images per shard (default `DEFAULT_SHARD_SIZE`); or
    num_shards: shards per split (at most one per image).
    max_pixels: images with more pixels are bad (default: Pillow's limit).
  """
  max_size: int = DEFAULT_MAX_SIZE
  val_fraction: float | None = None
  seed: int = 0
  shard_size: int | None = None
  num_shards: int | None = None
  max_pixels: int | None = None


@dataclasses.dataclass(frozen=True)
class PreparedImages:
  """What `prepare_images` did.

  Attributes:
    out_dir: the prepared dataset.
    index: its index (as written to index.json).
    bad_files: (path relative to SRC, reason) of every file or folder skipped, as
      bad_files.txt lists them (bytes of a name that is not UTF-8 backslash-escaped).
    shards_kept: finished shards found from an earlier run (checked, not rewritten).
    shards_written: shards converted by this call.
    shards_repaired: the shards of a finished dataset that were missing or did not match
      the index's SHA-256 (or that an index without checksums listed), converted again.
    already_prepared: OUT held this very dataset, finished, every shard matching its index:
      nothing was written.
  """
  out_dir: str
  index: image_records.ImageRecordIndex
  bad_files: tuple[tuple[str, str], ...]
  shards_kept: int
  shards_written: int
  shards_repaired: tuple[str, ...] = ()
  already_prepared: bool = False


def prepare_images(src: str, out: str, options: PrepareOptions = PrepareOptions(), *,
                   workers: int = 1, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> PreparedImages:
  """Converts the image folder `src` into a prepared dataset in `out` (see the module doc).

  Args:
    src: an image folder in ImageFolder layout.
    out: the dataset directory (created if missing); must not be SRC or inside it.
    options: what the shards hold (PrepareOptions: size cap, holdout, seed, sharding).
    workers: processes that decode and encode (1: in this process).
    overwrite: replace shards of another dataset (or other options) found in `out`.
    progress: called as `progress(images done, images in total)` as the work advances.

  Returns:
    PreparedImages.

  Raises:
    ConfigError: a bad option.
    DatasetError: SRC is not a usable image folder (see `image_files.list_image_folder`),
      OUT is SRC, lies inside it, is a file or holds another dataset's shards, or every
      image of a class turned out bad.
    WorkdirBusyError: another prepare_images holds OUT (nothing is touched).
    StorageError: a file in OUT cannot be written (no space, no permission): named with the
      free space there.
  """
  _check_options(options, workers)
  out_dir = _check_out(src, out)
  with prepared_out.claimed(out_dir):
    return _prepare(src, out_dir, options, workers, overwrite, progress)


def _prepare(src: str, out_dir: str, options: PrepareOptions, workers: int, overwrite: bool,
             progress: Callable[[int, int], None] | None) -> PreparedImages:
  folder = image_files.list_image_folder(src)
  splits = image_files.split_train_val(folder, options.val_fraction, options.seed)
  plan = plan_shards(splits, options.seed, options.shard_size, options.num_shards)
  stored = {'encoding': 'jpeg', 'quality': image_files.JPEG_QUALITY,
            'subsampling': image_files.JPEG_SUBSAMPLING, 'max_size': options.max_size,
            'resample': 'bicubic', 'alpha_background': list(image_files.ALPHA_BACKGROUND),
            'exif_orientation': 'applied', 'seed': options.seed,
            'val': 'folder' if folder.has_val_folder else (
                image_files.DEFAULT_VAL_FRACTION if options.val_fraction is None
                else options.val_fraction),
            'max_pixels': options.max_pixels, 'pillow': PIL.__version__}
  digest = plan_digest(src, folder.classes, plan, stored)
  repaired = ()
  if prepared_out.claim_out(out_dir, digest, overwrite) == 'finished':
    notes, bad = prepared_out.checked_shards(src, out_dir, plan, digest, len(folder.classes))
    if bad is not None and all(notes.values()):
      return _finished(out_dir, bad)
    repaired = tuple(name for name, note in notes.items() if note is None)
  else:
    notes = None
  prepared_out.record_plan(out_dir, digest, [s.name for s in plan])
  if notes is None:
    notes = {shard.name: prepared_out.finished_shard(out_dir, shard, digest) for shard in plan}
  else:  # Checked against the index: noted, so that an interrupted repair keeps them.
    for name, note in notes.items():
      if note is not None:
        storage.write_json_atomic(prepared_out.note_path(out_dir, name), note)
  pending = [shard for shard in plan if notes[shard.name] is None]
  if pending:  # The commit goes first: no index may list shards being replaced.
    prepared_out.remove(os.path.join(out_dir, image_records.INDEX_NAME))
  total = sum(len(shard.examples) for shard in plan)
  before = total - sum(len(shard.examples) for shard in pending)

  def advanced(count: int) -> None:
    if progress is not None:
      progress(before + count, total)

  advanced(0)
  for shard, note in _convert(pending, out_dir, digest, folder.classes, options, workers,
                              advanced):
    notes[shard.name] = note
  return _finish(src, out_dir, folder, plan, notes, stored | {'plan_digest': digest},
                 shards_kept=len(plan) - len(pending), repaired=repaired)


def _check_options(options: PrepareOptions, workers: int) -> None:
  shard_size, num_shards = options.shard_size, options.num_shards
  for name, value in (('max_size', options.max_size), ('workers', workers),
                      ('shard_size', shard_size), ('num_shards', num_shards)):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or
                              value < 1):
      raise ConfigError(f'{name}={value!r}; expected a positive integer')
  if shard_size is not None and num_shards is not None:
    raise ConfigError(f'shard_size={shard_size} and num_shards={num_shards}; expected at most '
                      'one of them')


def _check_out(src: str, out: str) -> str:
  source, target = os.path.realpath(src), os.path.realpath(out)
  if target == source or target.startswith(source.rstrip(os.sep) + os.sep):
    raise DatasetError(f'output folder {out!r} is the image folder {src!r} or lies inside it; '
                       'expected a folder outside it')
  if os.path.exists(out) and not os.path.isdir(out):
    raise DatasetError(f'output folder {out!r} is a file; expected a directory')
  return out


def plan_shards(splits: dict, seed: int, shard_size: int | None = None,
                num_shards: int | None = None) -> list[ShardPlan]:
  """Each split shuffled with the seed and cut into shards of as equal sizes as can be."""
  plan = []
  for number, (split, examples) in enumerate(sorted(splits.items())):
    if not examples:
      continue
    order = np.random.default_rng([seed, 1000 + number]).permutation(len(examples))
    shuffled = [examples[i] for i in order]
    if num_shards is not None:
      count = min(num_shards, len(shuffled))
    else:
      count = math.ceil(len(shuffled) / (shard_size or DEFAULT_SHARD_SIZE))
    bounds = [len(shuffled) * i // count for i in range(count + 1)]
    plan.extend(ShardPlan(split, image_records.shard_name(split, i, count),
                          tuple(shuffled[bounds[i]:bounds[i + 1]])) for i in range(count))
  return plan


def plan_digest(src: str, classes: Sequence[str], plan: Sequence[ShardPlan],
                options: dict) -> str:
  """SHA-256 of what the shards will hold: options, classes, and per shard each file's
  path (relative to SRC), label, size and modification time."""
  hasher = hashlib.sha256()
  hasher.update(json.dumps({'format': image_records.FORMAT, 'options': options,
                            'classes': list(classes)}, sort_keys=True).encode())
  for shard in plan:
    hasher.update(f'\n{shard.name}'.encode())
    image_files.hash_files(hasher, src, shard.examples)
  return hasher.hexdigest()


def convert_image(task: tuple) -> tuple[bytes | None, str | None]:
  """(record, None) for a usable image, (None, reason) for a bad one; runs in workers."""
  path, label, max_size, max_pixels = task
  try:
    return image_records.encode_record(
        label, image_files.stored_jpeg(path, max_size, max_pixels=max_pixels)), None
  except BadImageError as error:
    return None, error.reason


def _convert(pending: list, out_dir: str, digest: str, classes, options: PrepareOptions,
             workers: int, advanced: Callable[[int], None]):
  """Converts the pending shards in order; yields (shard, note) as each is on disk."""
  tasks = [(path, label, options.max_size, options.max_pixels) for shard in pending
           for path, label in shard.examples]
  if not tasks:
    return
  pool = None
  if workers > 1:
    # Spawned, not forked: the caller may hold threads (JAX, a test runner).
    pool = multiprocessing.get_context('spawn').Pool(min(workers, len(tasks)))
    results = pool.imap(convert_image, tasks, chunksize=max(1, min(16, len(tasks) //
                                                                   (4 * workers))))
  else:
    results = map(convert_image, tasks)
  try:
    done = 0
    for shard in pending:
      records, bad, per_class = [], [], [0] * len(classes)
      for path, label in shard.examples:
        record, reason = next(results)
        if record is None:
          bad.append((path, reason))
        else:
          records.append(record)
          per_class[label] += 1
        done += 1
        advanced(done)
      path = os.path.join(out_dir, shard.name)
      image_records.write_shard(path, records)
      note = {'plan_digest': digest, 'sha256': image_records.file_sha256(path),
              'bytes': os.path.getsize(path), 'records': len(records),
              'count_per_class': per_class, 'bad_files': bad}
      storage.write_json_atomic(prepared_out.note_path(out_dir, shard.name), note)
      yield shard, note
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()


def _finish(src: str, out_dir: str, folder: image_files.ImageFolder, plan: list, notes: dict,
            stored: dict, shards_kept: int, repaired: tuple = ()) -> PreparedImages:
  """bad_files.txt, index.json (last but for the cleanup: it is the commit), then .prepare/
  removed."""
  bad = [(os.path.relpath(path, src), reason) for path, reason in folder.skipped]
  splits = {}
  for split in sorted({shard.split for shard in plan}):
    shards = [shard for shard in plan if shard.split == split]
    per_class = np.sum([notes[s.name]['count_per_class'] for s in shards], axis=0)
    sizes = tuple(int(notes[s.name].get('bytes') or os.path.getsize(
        os.path.join(out_dir, s.name))) for s in shards)  # Notes of earlier versions lack it.
    splits[split] = image_records.SplitIndex(
        tuple(s.name for s in shards), tuple(notes[s.name]['records'] for s in shards),
        tuple(int(n) for n in per_class), sizes, tuple(notes[s.name]['sha256'] for s in shards))
    for shard in shards:
      bad.extend((os.path.relpath(path, src), reason)
                 for path, reason in notes[shard.name]['bad_files'])
  field = prepared_out.one_field
  bad = sorted((field(prepared_out.printable(path)), field(reason)) for path, reason in bad)
  storage.write_text_atomic(os.path.join(out_dir, BAD_FILES_NAME),
                            prepared_out.bad_files_text(src, bad))
  empty = [name for name, n in zip(folder.classes, splits['train'].count_per_class) if not n]
  if empty:
    raise DatasetError(f'{src!r}: no image of class {empty[:5]} could be read (see '
                       f'{os.path.join(out_dir, BAD_FILES_NAME)}); expected at least one '
                       'usable training image per class')
  index = image_records.ImageRecordIndex(folder.classes, splits, stored | {'bad_files': len(bad)})
  image_records.write_index(out_dir, index)
  prepared_out.remove_progress(out_dir)
  return PreparedImages(out_dir, index, tuple(bad), shards_kept, len(plan) - shards_kept,
                        repaired)


def _finished(out_dir: str, bad: dict) -> PreparedImages:
  """A finished conversion of the same plan whose shards all match the index: nothing
  rewritten."""
  index = image_records.read_index(out_dir)
  prepared_out.remove_progress(out_dir)
  num_shards = sum(len(split.shards) for split in index.splits.values())
  return PreparedImages(out_dir, index, tuple(sorted(bad.items())), num_shards, 0,
                        already_prepared=True)
