"""Preparing an image folder: shards + index, bad files skipped and named, holdout, resume,
byte-identical reruns, refusals that leave the disk as it was, and the script."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from array_record.python import array_record_module
from image_folders import (
  CLASSES,
  COLOURS,
  class_image,
  encoded,
  write_bad_images,
  write_image_folder,
)
from PIL import Image

from experiments import prepare_images as script
from resnet_jax.data import image_records
from resnet_jax.data.image_files import decode_rgb
from resnet_jax.data.prepare_images import PrepareOptions, prepare_images as prepare_with_options
from resnet_jax.data.prepared_out import BAD_FILES_NAME, PROGRESS_DIR
from resnet_jax.errors import ConfigError, DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(out, split):
  index = image_records.read_index(str(out))
  found = []
  for path in image_records.shard_paths(str(out), index, split):
    reader = array_record_module.ArrayRecordReader(path)
    found += [image_records.decode_record(r) for r in reader.read_all()]
    reader.close()
  return index, found


def _shard_bytes(out):
  return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))
          if name.endswith('.array_record')}


def prepare_images(src, out, *, workers=1, overwrite=False, progress=None, **options):
  """The library's prepare_images with PrepareOptions' fields as keywords (shorter tests)."""
  return prepare_with_options(src, out, PrepareOptions(**options), workers=workers,
                              overwrite=overwrite, progress=progress)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """4 classes x 30 images, bad files, a symlink loop, non-ASCII, space, tab, newline and
  non-UTF-8 names."""
  root = tmp_path_factory.mktemp('src')
  write_image_folder(root, per_class=30, size=(40, 30))
  bad = write_bad_images(root / 'red_square')
  os.symlink('..', root / 'green_bars' / 'loop')
  odd = root / 'blue_disc' / 'sous-dossier à part'
  odd.mkdir()
  (odd / 'ça va 猫.PNG').write_bytes(
      encoded(class_image('blue_disc', np.random.default_rng(5), (40, 30)), 'PNG'))
  (root / 'blue_disc' / os.fsdecode(b'bad \xff name.jpg')).write_bytes(b'')
  (root / 'blue_disc' / 'tab\tand\nnewline.jpg').write_bytes(b'')
  # {path relative to root, as bad_files.txt lists it: a word of the reason}
  return root, {'red_square/' + name: word for name, word in bad.items()} | {
      'green_bars/loop': 'loop', 'blue_disc/bad \\xff name.jpg': 'empty',
      'blue_disc/tab\\tand\\nnewline.jpg': 'empty'}


def test_a_folder_becomes_shards_with_an_index_and_bad_files_listed(source, tmp_path):
  src, bad = source
  out = tmp_path / 'out'
  seen = []
  done = prepare_images(str(src), str(out), max_size=20, shard_size=25,
                        progress=lambda n, total: seen.append((n, total)))
  index = done.index
  assert index.classes == CLASSES
  # 31 blue (one good in the subfolder), 30 green, 30 red, 30 yellow usable images.
  usable = np.array([31, 30, 30, 30])
  train, val = index.splits['train'], index.splits['val']
  np.testing.assert_array_equal(np.add(train.count_per_class, val.count_per_class), usable)
  # 10% of every class's files, rounded (33, 30, 35, 30 listed): 13 val and 115 train files,
  # bad ones included (the holdout is drawn before the files are read).
  assert len(val.shards) == 1 and len(train.shards) == 5  # Shards of at most 25 files.
  assert index.storage['max_size'] == 20 and index.storage['quality'] == 95
  assert index.storage['bad_files'] == len(bad) == len(done.bad_files)
  assert seen[-1] == (seen[-1][1], seen[-1][1]) and seen[-1][1] == 121 + len(bad) - 1
  assert [n for n, _ in seen] == sorted(n for n, _ in seen)

  lines = (out / BAD_FILES_NAME).read_text().splitlines()
  assert lines[0].startswith(f'# {len(bad)} files or folders under {src}')
  listed = dict(line.split('\t') for line in lines[1:])
  assert sorted(listed) == sorted(bad)
  for path, word in bad.items():
    assert word in listed[path]
  assert sorted(os.listdir(out)) == sorted(
      [BAD_FILES_NAME, 'index.json'] + list(train.shards) + list(val.shards))

  for split in ('train', 'val'):
    _, records = _records(out, split)
    assert len(records) == index.splits[split].num_examples
    for label, data in records:
      image = decode_rgb(data)
      assert min(image.shape[:2]) == 20 and image.shape[1] in (26, 27)  # 40x30 -> 27x20
      assert _colour_class(image) == CLASSES[label]


def _colour_class(image):
  """The class whose colour is nearest (in direction) to the picture's brightest pixels."""
  pixels = image.reshape(-1, 3).astype(float)
  bright = pixels[np.argsort(pixels.sum(1))[-10:]].mean(0) - 30  # Less the dark background.
  unit = lambda v: np.asarray(v, float) / np.linalg.norm(v)
  return max(COLOURS, key=lambda name: unit(COLOURS[name]) @ unit(bright))


def test_the_holdout_is_stratified_seeded_and_disjoint(tmp_path):
  src = tmp_path / 'src'
  write_image_folder(src, per_class=20, classes=CLASSES[:3], size=(8, 8))
  (src / 'tiny').mkdir()
  for i in range(2):  # A class of two: one for training, one for validation.
    (src / 'tiny' / f'{i}.png').write_bytes(encoded(np.zeros((8, 8, 3), np.uint8), 'PNG'))
  runs = {}
  for seed in (0, 0, 1):
    out = tmp_path / f'out{seed}{len(runs)}'
    index = prepare_images(str(src), str(out), val_fraction=0.25, seed=seed).index
    assert index.splits['val'].count_per_class == (5, 5, 5, 1)
    assert index.splits['train'].count_per_class == (15, 15, 15, 1)
    runs.setdefault(seed, []).append(sorted(data for _, data in _records(out, 'val')[1]))
  assert runs[0][0] == runs[0][1] and runs[0][0] != runs[1][0]
  no_val = prepare_images(str(src), str(tmp_path / 'none'), val_fraction=0).index
  assert list(no_val.splits) == ['train'] and no_val.splits['train'].num_examples == 62


def test_train_and_val_folders_are_kept_and_val_fraction_is_refused_then(tmp_path):
  src = tmp_path / 'src'
  write_image_folder(src, per_class=6, classes=CLASSES[:2], val_per_class=3, size=(8, 8))
  index = prepare_images(str(src), str(tmp_path / 'out'), num_shards=4).index
  assert index.splits['train'].count_per_class == (6, 6)
  assert index.splits['val'].count_per_class == (3, 3)
  assert len(index.splits['train'].shards) == 4 and index.splits['train'].shards[0] == \
      'train-00000-of-00004.array_record'
  assert index.storage['val'] == 'folder'
  with pytest.raises(ConfigError, match='has a val folder'):
    prepare_images(str(src), str(tmp_path / 'other'), val_fraction=0.2)
  assert not (tmp_path / 'other').exists()


def test_reruns_give_byte_identical_shards_in_one_process_or_several(source, tmp_path):
  src, _ = source
  one = tmp_path / 'one'
  prepare_images(str(src), str(one), max_size=24, shard_size=40, seed=3)
  two = tmp_path / 'two'
  prepare_images(str(src), str(two), max_size=24, shard_size=40, seed=3, workers=2)
  assert _shard_bytes(one) == _shard_bytes(two) and len(_shard_bytes(one)) == 4
  assert (one / 'index.json').read_bytes() == (two / 'index.json').read_bytes()
  assert (one / BAD_FILES_NAME).read_bytes() == (two / BAD_FILES_NAME).read_bytes()


def test_an_interrupted_conversion_keeps_finished_shards_and_ends_as_an_unbroken_one(
    source, tmp_path):
  src, _ = source
  unbroken = tmp_path / 'unbroken'
  prepare_images(str(src), str(unbroken), shard_size=20)
  out = tmp_path / 'out'

  def stop_at(count):
    def progress(done, total):
      if done == count:
        raise KeyboardInterrupt
    return progress

  with pytest.raises(KeyboardInterrupt):  # In the middle of the fourth shard.
    prepare_images(str(src), str(out), shard_size=20, progress=stop_at(70))
  finished = _shard_bytes(out)
  assert len(finished) == 3 and os.path.isdir(out / PROGRESS_DIR)
  assert not (out / 'index.json').exists()
  # A finished shard whose bytes changed since is converted again; the others are kept.
  changed = sorted(finished)[1]
  with open(out / changed, 'r+b') as f:
    f.seek(100)
    f.write(b'\0\1\2')
  kept_times = {name: os.stat(out / name).st_mtime_ns for name in finished}
  # What a kill while writing the fourth shard leaves: its temporary file, half written.
  (out / 'train-00003-of-00006.array_record.tmp').write_bytes(b'half a shard')
  done = prepare_images(str(src), str(out), shard_size=20)
  assert (done.shards_kept, done.shards_written) == (2, 5)
  for name in set(finished) - {changed}:
    assert os.stat(out / name).st_mtime_ns == kept_times[name]
  assert _shard_bytes(out) == _shard_bytes(unbroken)
  assert sorted(os.listdir(out)) == sorted(os.listdir(unbroken))
  assert (out / 'index.json').read_bytes() == (unbroken / 'index.json').read_bytes()
  # Run again once finished: nothing is rewritten.
  again = prepare_images(str(src), str(out), shard_size=20)
  assert (again.shards_kept, again.shards_written) == (7, 0)
  assert again.bad_files == done.bad_files


def test_an_out_holding_another_datasets_shards_is_refused_unless_overwrite(source, tmp_path):
  src, _ = source
  out = tmp_path / 'out'
  prepare_images(str(src), str(out), shard_size=100)
  (out / 'README.txt').write_text('mine')
  before = {name: (out / name).read_bytes() for name in os.listdir(out)}
  for options in ({'shard_size': 50}, {'max_size': 64, 'shard_size': 100}):
    with pytest.raises(DatasetError, match='holds .* of another dataset'):
      prepare_images(str(src), str(out), **options)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
  done = prepare_images(str(src), str(out), shard_size=50, overwrite=True)
  assert sorted(os.listdir(out)) == sorted(
      ['README.txt', BAD_FILES_NAME, 'index.json', *done.index.splits['train'].shards,
       *done.index.splits['val'].shards])
  assert (out / 'README.txt').read_text() == 'mine'


def test_out_must_not_be_src_or_inside_it_and_nothing_is_created(source, tmp_path):
  src, _ = source
  for out in (src, src / 'prepared', src / 'red_square' / 'x'):
    with pytest.raises(DatasetError, match='is the image folder .* or lies inside it'):
      prepare_images(str(src), str(out))
  assert not (src / 'prepared').exists() and not (src / 'red_square' / 'x').exists()
  (tmp_path / 'file').write_text('')
  with pytest.raises(DatasetError, match='is a file'):
    prepare_images(str(src), str(tmp_path / 'file'))


def test_a_class_whose_every_image_is_bad_is_an_error(tmp_path):
  src = tmp_path / 'src'
  write_image_folder(src, per_class=3, classes=CLASSES[:2], size=(8, 8))
  (src / 'broken').mkdir()
  (src / 'broken' / 'a.jpg').write_bytes(b'not a jpeg')
  with pytest.raises(DatasetError, match=r"no image of class \['broken'\] could be read"):
    prepare_images(str(src), str(tmp_path / 'out'), val_fraction=0)
  assert 'broken/a.jpg' in (tmp_path / 'out' / BAD_FILES_NAME).read_text()
  assert not (tmp_path / 'out' / 'index.json').exists()


def test_large_images_are_stored_at_max_size_and_upright(tmp_path):
  src = tmp_path / 'src'
  for name in ('blue_disc', 'red_square'):
    (src / name).mkdir(parents=True)
  picture = np.asarray(Image.fromarray(class_image('red_square', np.random.default_rng(0),
                                                   (40, 30))).resize((400, 300)))
  exif = Image.Exif()
  exif[0x0112] = 6  # Stored sideways: shown turned 90 degrees clockwise.
  (src / 'red_square' / 'a.jpg').write_bytes(encoded(picture, 'JPEG', exif=exif.tobytes()))
  (src / 'blue_disc' / 'b.png').write_bytes(encoded(picture, 'PNG'))
  _, records = _records(_prepared(src, tmp_path / 'out', max_size=64), 'train')
  shapes = {label: decode_rgb(data).shape for label, data in records}
  assert shapes == {0: (64, 85, 3), 1: (85, 64, 3)}


def _prepared(src, out, **options):
  prepare_images(str(src), str(out), val_fraction=0, **options)
  return out


@pytest.mark.parametrize('option, message', [
    ({'max_size': 0}, 'max_size=0'), ({'workers': 0}, 'workers=0'),
    ({'val_fraction': 1.0}, 'val_fraction=1.0'),
    ({'shard_size': 5, 'num_shards': 2}, 'at most one of them')])
def test_bad_options_are_config_errors(tmp_path, option, message):
  write_image_folder(tmp_path / 'src', per_class=2, classes=CLASSES[:2], size=(8, 8))
  with pytest.raises(ConfigError, match=message):
    prepare_images(str(tmp_path / 'src'), str(tmp_path / 'out'), **option)
  assert not (tmp_path / 'out').exists()


def test_the_script_prepares_and_reports_bad_files(source, tmp_path, capsys):
  src, bad = source
  out = tmp_path / 'out'
  assert script.main([str(src), str(out), '--max-size=32', '--workers=1', '--num_shards=3']) == 0
  captured = capsys.readouterr()
  assert f'skipped {len(bad)} bad files: see {out / BAD_FILES_NAME}' in captured.out
  assert '4 classes; train ' in captured.out and 'img' in captured.err  # The progress bar.
  assert script.main([str(src), str(out), '--max-size=32', '--workers=1', '--num_shards=3']) == 0
  assert 'already prepared' in capsys.readouterr().out


@pytest.mark.parametrize('make, message', [
    (lambda src: src.mkdir(), 'holds no class folders'),
    (lambda src: write_image_folder(src, 2, CLASSES[:1], size=(8, 8)), 'one class folder'),
    (lambda src: (write_image_folder(src, 2, CLASSES[:2], size=(8, 8)),
                  (src / 'no images').mkdir()), "'.*no images' holds no image file"),
])
def test_the_script_refuses_bad_folders_with_one_line_and_writes_nothing(
    tmp_path, capsys, make, message):
  src = tmp_path / 'src'
  make(src)
  assert script.main([str(src), str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: DatasetError: ') and err.count('\n') == 1, err
  assert re.search(message, err), err
  assert not (tmp_path / 'out').exists()


def test_the_script_names_a_usage_error(tmp_path, capsys):
  assert script.main([str(tmp_path)]) == 2
  assert 'expected SRC and OUT' in capsys.readouterr().err


@pytest.mark.slow  # Two script runs in subprocesses, with worker processes; ~5 s.
def test_the_script_killed_mid_conversion_continues_on_rerun(tmp_path):
  src = tmp_path / 'src'
  write_image_folder(src, per_class=40, size=(160, 120))
  unbroken = tmp_path / 'unbroken'
  prepare_images(str(src), str(unbroken), shard_size=10)
  out = tmp_path / 'out'
  command = [sys.executable, script.__file__, str(src), str(out), '--shard_size=10',
             '--workers=2']
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  # Its own session, so that the kill takes the worker processes too, as a crash would.
  process = subprocess.Popen(command, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 120
  while len(_shard_bytes(out) if out.is_dir() else {}) < 2 and time.monotonic() < deadline:
    time.sleep(0.005)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  assert not (out / 'index.json').exists(), 'finished before it could be killed'
  # A shard renamed into place just before the kill, before its note, is converted again.
  noted = [name for name in _shard_bytes(out) if (out / PROGRESS_DIR / f'{name}.json').exists()]
  assert 1 <= len(noted) < 15
  rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
  assert rerun.returncode == 0, rerun.stderr
  assert f'({len(noted)} kept from an earlier run)' in rerun.stdout
  assert _shard_bytes(out) == _shard_bytes(unbroken)
  assert sorted(os.listdir(out)) == sorted(os.listdir(unbroken))
