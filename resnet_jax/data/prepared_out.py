"""The state of a prepared dataset's folder (OUT) while `prepare_images` writes it.

`prepare_images` plans and converts; this module answers what OUT holds and who may touch it,
so that a rerun, an interrupted run and a second writer are safe:

- the claim: `claimed(out_dir)` creates OUT and holds an OS lock on OUT/.lock
  (resnet_jax.dir_lock) for the whole conversion, so a second writer is refused at once
  (WorkdirBusyError naming the holder) and a dead one (kill -9 included) leaves no claim;
- which files are ours: `claim_out` says whether OUT is new, holds an interrupted conversion
  of the same plan ('resume'), or a finished one ('finished'), and refuses the files of
  another plan unless `overwrite`, when only the files this module names are removed (the
  index first: it is the commit);
- how far a conversion got: OUT/.prepare/ holds the plan digest (`record_plan`) and, per
  finished shard, a note with its SHA-256 (`note_path`); `finished_shard` keeps a shard only
  while its bytes match its note, and `checked_shards` checks a finished conversion's shards
  against the index's sizes and SHA-256 and rebuilds their notes from it and bad_files.txt;
- bad_files.txt: `bad_files_text` writes it, one line per skipped file (`one_field`,
  `printable`), in the form `checked_shards` reads back.

A file that cannot be written or removed (no space, no permission) is a StorageError
naming it and the free space (`storage.failures_named`).
"""
import contextlib
import json
import os
import shutil
from typing import Sequence

from resnet_jax import dir_lock, storage
from resnet_jax.data import image_records
from resnet_jax.errors import DatasetError, WorkdirBusyError

BAD_FILES_NAME = 'bad_files.txt'
PROGRESS_DIR = '.prepare'
_PLAN_NAME = 'plan.json'


class _OutLock(dir_lock.DirLock):
  """OUT/.lock, its refusal worded for a dataset being written."""

  def busy_error(self, holder: str) -> Exception:
    return WorkdirBusyError(
        f'output folder {self.directory!r} is being written by another prepare_images '
        f'({holder}); expected one writer per dataset: wait for it to end (or stop it), or '
        'give another OUT')


@contextlib.contextmanager
def claimed(out_dir: str):
  """OUT created (with its missing parents) and locked for the block; on the way out the
  lock file is removed, and so are the directories made here if they are still empty."""
  created = dir_lock.missing_directories(out_dir)
  try:
    with storage.failures_named(out_dir):
      os.makedirs(out_dir, exist_ok=True)
    lock = _OutLock(out_dir)
    lock.acquire()
    try:
      yield
    finally:
      lock.release(remove_file=True)  # OUT's lock is only ever ours: never left behind.
  finally:
    for directory in created:
      try:
        os.rmdir(directory)  # Only if empty: a failed start leaves the disk as it was.
      except OSError:
        break


def remove(path: str) -> None:
  """`path` (a file or a directory tree) removed if it exists."""
  with storage.failures_named(path):
    try:
      shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(
          path)
    except FileNotFoundError:
      pass


def _ours(name: str) -> bool:
  return name in (image_records.INDEX_NAME, BAD_FILES_NAME, PROGRESS_DIR) or name.endswith(
      (image_records.SHARD_SUFFIX, image_records.SHARD_SUFFIX + '.tmp'))


def claim_out(out_dir: str, digest: str, overwrite: bool) -> str:
  """'new', 'resume' or 'finished'; clears OUT of our files first when `overwrite`. OUT
  exists (it is claimed).

  Raises DatasetError when OUT holds shards or an index of another plan (not `overwrite`).
  """
  ours = sorted(name for name in os.listdir(out_dir) if _ours(name))
  if overwrite:  # The index (the commit) first: no reader may find it beside other shards.
    for name in sorted(ours, key=lambda name: name != image_records.INDEX_NAME):
      remove(os.path.join(out_dir, name))
    return 'new'
  if _recorded_digest(os.path.join(out_dir, image_records.INDEX_NAME), 'storage') == digest:
    return 'finished'
  if _recorded_digest(os.path.join(out_dir, PROGRESS_DIR, _PLAN_NAME)) == digest:
    return 'resume'
  if any(name != BAD_FILES_NAME for name in ours):
    listed = [name for name in ours if name != BAD_FILES_NAME]
    raise DatasetError(f'output folder {out_dir!r} holds {listed[:3]}... of another dataset, or '
                       'of this one prepared with other options or before its files changed; '
                       'expected an empty or new folder, or overwrite (--overwrite) to replace '
                       'them')
  return 'new'


def _recorded_digest(path: str, field: str | None = None) -> str | None:
  try:
    with open(path, encoding='utf-8') as f:
      recorded = json.load(f)
    return (recorded[field] if field else recorded)['plan_digest']
  except (OSError, ValueError, KeyError, TypeError):
    return None


def record_plan(out_dir: str, digest: str, shard_names: Sequence[str]) -> None:
  """OUT/.prepare/ created, holding the plan digest: what lets a rerun of the same plan
  resume."""
  progress_dir = os.path.join(out_dir, PROGRESS_DIR)
  with storage.failures_named(progress_dir):
    os.makedirs(progress_dir, exist_ok=True)
  storage.write_json_atomic(os.path.join(progress_dir, _PLAN_NAME),
                            {'plan_digest': digest, 'shards': list(shard_names)})


def remove_progress(out_dir: str) -> None:
  """OUT/.prepare/ removed: the conversion is finished (its index written)."""
  shutil.rmtree(os.path.join(out_dir, PROGRESS_DIR), ignore_errors=True)


def note_path(out_dir: str, shard_name: str) -> str:
  """Where the note of a finished shard is kept while converting."""
  return os.path.join(out_dir, PROGRESS_DIR, shard_name + '.json')


def finished_shard(out_dir: str, shard, digest: str) -> dict | None:
  """The note of `shard` (a `prepare_images.ShardPlan`) an earlier run finished, if its bytes
  still match it."""
  try:
    with open(note_path(out_dir, shard.name), encoding='utf-8') as f:
      note = json.load(f)
    if note['plan_digest'] == digest and note['sha256'] == image_records.file_sha256(
        os.path.join(out_dir, shard.name)):
      return note
  except (OSError, ValueError, KeyError, TypeError):
    pass
  return None


def checked_shards(src: str, out_dir: str, plan: Sequence, digest: str,
                   num_classes: int) -> tuple[dict, dict | None]:
  """A finished conversion of the same plan (`prepare_images.ShardPlan`s), each shard checked
  against the index.

  Returns ({shard name: its note, as `prepare_images` makes it, or None if the shard is
  missing, does not match the index's size and SHA-256, or the index has none}, {path field
  of bad_files.txt: reason}); the second is None (and every note None) when the index or
  bad_files.txt cannot be read.
  """
  try:
    index = image_records.read_index(out_dir)
    with open(os.path.join(out_dir, BAD_FILES_NAME), encoding='utf-8') as f:
      bad = dict(line.rstrip('\n').split('\t', 1) for line in f if not line.startswith('#'))
  except (DatasetError, OSError, ValueError):
    return {shard.name: None for shard in plan}, None
  notes = {}
  for shard in plan:
    notes[shard.name] = None
    entry = index.splits.get(shard.split)
    if entry is None or entry.sha256 is None or entry.shard_bytes is None or \
        shard.name not in entry.shards:
      continue
    i = entry.shards.index(shard.name)
    path = os.path.join(out_dir, shard.name)
    try:
      if os.path.getsize(path) != entry.shard_bytes[i] or \
          image_records.file_sha256(path) != entry.sha256[i]:
        continue
    except OSError:
      continue
    skipped, per_class = [], [0] * num_classes
    for example, label in shard.examples:
      field = one_field(printable(os.path.relpath(example, src)))
      if field in bad:
        skipped.append((example, bad[field]))
      else:
        per_class[label] += 1
    if sum(per_class) == entry.records_per_shard[i]:
      notes[shard.name] = {'plan_digest': digest, 'sha256': entry.sha256[i],
                           'bytes': entry.shard_bytes[i], 'records': sum(per_class),
                           'count_per_class': per_class, 'bad_files': skipped}
  return notes, bad


def bad_files_text(src: str, bad: Sequence[tuple[str, str]]) -> str:
  """bad_files.txt: a header line, then `path relative to SRC<TAB>reason` per skipped file
  (each without tabs or line breaks: see `one_field`)."""
  lines = [f'# {len(bad)} files or folders under {os.path.abspath(src)} were skipped '
           '(path relative to it, a tab, the reason)']
  lines += [f'{path}\t{reason}' for path, reason in bad]
  return '\n'.join(lines) + '\n'


def one_field(text: str) -> str:
  """`text` without the tabs and line breaks that would split its line (names may hold them)."""
  return text.replace('\t', '\\t').replace('\n', '\\n').replace('\r', '\\r')


def printable(path: str) -> str:
  """`path` as text: bytes of a name that is not UTF-8 backslash-escaped (b'\\xff')."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')
