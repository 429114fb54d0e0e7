r"""Prepares an image folder for training: ArrayRecord shards of JPEGs plus index.json.

  python experiments/prepare_images.py ~/photos data/photos            # 10% held out as val
  python experiments/prepare_images.py /data/imagenet data/imagenet --workers 16

SRC is in ImageFolder layout: SRC/<class>/<image>, or SRC/train/<class>/<image> with
SRC/val/<class>/<image>. Without a val folder, --val_fraction of every class (default 0.1,
chosen with --seed) becomes the val split. Every image is stored upright, in RGB, with its
shorter side at most --max_size (aspect kept), as a JPEG of quality 95; the index lists the
class names, the counts per split and class, and how the images were stored. Files that
cannot be read (corrupt, truncated, empty, not images, over Pillow's pixel limit) are
skipped and listed with the reason in OUT/bad_files.txt.

An interrupted conversion (Ctrl-C, a crash) continues when the same command is run again:
finished shards are checked and kept. Run again on a finished OUT, it checks every shard
against the SHA-256 in index.json and rewrites those that are missing or damaged (the
line says which). The same input gives byte-identical shards. One run per OUT: a second
one, with any options, is refused at once (it names the first). index.json, which lists
each shard's size and SHA-256, is removed before any shard is replaced and written last.
An OUT that holds another dataset's shards is refused unless --overwrite (which removes
only the files this script writes). Bad input, or a disk that is full or read-only,
prints one `error:` line and exits with code 2 (--debug shows the traceback); no
temporary file is left.

Training reads OUT with config.data.name = 'images' and config.data.data_dir = OUT.
"""
import os
import signal
import sys

from absl import app, flags

from experiments import cli

SCRIPT = cli.Script(__doc__)
_MAX_SIZE = flags.DEFINE_integer('max_size', 256, 'Cap on the shorter side of stored images '
                                 '(never enlarged).', flag_values=SCRIPT.flags)
_VAL_FRACTION = flags.DEFINE_float('val_fraction', None, 'Share of each class held out as val '
                                   'when SRC has no val folder (default 0.1; 0: no val).',
                                   flag_values=SCRIPT.flags)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the holdout and of the order in the shards.',
                             flag_values=SCRIPT.flags)
_WORKERS = flags.DEFINE_integer('workers', None, 'Processes that decode and encode (default: '
                                'the CPU cores).', flag_values=SCRIPT.flags)
_SHARD_SIZE = flags.DEFINE_integer('shard_size', None, 'Images per shard (default 1024).',
                                   flag_values=SCRIPT.flags)
_NUM_SHARDS = flags.DEFINE_integer('num_shards', None, 'Shards per split (instead of '
                                   '--shard_size).', flag_values=SCRIPT.flags)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, "Replace another dataset's shards in OUT.",
                               flag_values=SCRIPT.flags)


class _Bar:
  """A tqdm bar over the images, made when the total is known."""

  def __init__(self):
    self.bar = None

  def __call__(self, done: int, total: int) -> None:
    if self.bar is None:
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total, initial=done, unit='img', dynamic_ncols=True,
                      smoothing=0.05)
    self.bar.update(done - self.bar.n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt  # Unwinds through the worker pool, which is then terminated.


def _main(argv: list) -> int:
  if len(argv) != 2:
    raise app.UsageError(f'expected SRC and OUT: prepare_images.py SRC OUT; got {argv}')
  if _SHARD_SIZE.value is not None and _NUM_SHARDS.value is not None:
    raise app.UsageError('give --shard_size or --num_shards, not both')
  from resnet_jax.data.prepare_images import BAD_FILES_NAME, PrepareOptions, prepare_images
  src, out = argv
  bar = _Bar()
  handler = signal.signal(signal.SIGTERM, _interrupt)
  try:
    options = PrepareOptions(max_size=_MAX_SIZE.value, val_fraction=_VAL_FRACTION.value,
                             seed=_SEED.value, shard_size=_SHARD_SIZE.value,
                             num_shards=_NUM_SHARDS.value)
    done = prepare_images(
        src, out, options, overwrite=_OVERWRITE.value, progress=bar,
        workers=(os.cpu_count() or 1) if _WORKERS.value is None else _WORKERS.value)
  except KeyboardInterrupt:
    bar.close()
    print('interrupted: finished shards are kept; run the same command again to continue',
          file=sys.stderr)
    return 130
  finally:
    bar.close()
    signal.signal(signal.SIGTERM, handler)
  index = done.index
  counts = ', '.join(f'{split} {entry.num_examples} images in {len(entry.shards)} shards'
                     for split, entry in index.splits.items())
  if done.shards_repaired:
    names = ', '.join(done.shards_repaired[:3]) + (', ...' if len(done.shards_repaired) > 3
                                                   else '')
    kept = (f' (already prepared: {done.shards_kept} shards checked against index.json and '
            f'kept; {len(done.shards_repaired)} missing, damaged or without a checksum '
            f'rewritten: {names})')
  elif done.already_prepared:
    kept = (f' (already prepared: its {done.shards_kept} shards checked against the SHA-256 '
            'in index.json, none rewritten)')
  else:
    kept = f' ({done.shards_kept} kept from an earlier run)' if done.shards_kept else ''
  print(f'{out}: {len(index.classes)} classes; {counts}{kept}')
  if done.bad_files:
    print(f'skipped {len(done.bad_files)} bad files: see {os.path.join(out, BAD_FILES_NAME)}')
  else:
    print('no bad files')
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run(_main, argv)


if __name__ == '__main__':
  sys.exit(main())
