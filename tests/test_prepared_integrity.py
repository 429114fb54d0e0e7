"""Prepared data that proves itself: one writer per OUT, an index that commits the shards with
their sizes and SHA-256, checks when a dataset is opened and when a record is read, repair by
rerunning prepare_images, and one line (no temporary file left) when the disk is full."""
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import _image_data
import pytest
from image_folders import write_image_folder

import _fault_helpers as fh
from experiments import prepare_images as script
from resnet_jax.data import image_records, images, pipeline
from resnet_jax.data.prepare_images import PrepareOptions, prepare_images
from resnet_jax.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'experiments', 'prepare_images.py')


@pytest.fixture(scope='module')
def src(tmp_path_factory):
  """4 classes x 12 small pictures: 44 train and 4 val images."""
  root = tmp_path_factory.mktemp('integrity') / 'src'
  write_image_folder(root, per_class=12, size=(24, 18))
  return root


@pytest.fixture(scope='module')
def prepared(src, tmp_path_factory):
  """A finished dataset of `src` in shards of 10 images (5 train shards, 1 val)."""
  out = tmp_path_factory.mktemp('prepared') / 'out'
  prepare_images(str(src), str(out), PrepareOptions(shard_size=10))
  return out


def _copy(prepared, tmp_path):
  copy = tmp_path / 'copy'
  shutil.copytree(prepared, copy)
  return copy


def _contents(folder) -> dict:
  """{name: bytes} of every file in `folder` (dot files included), recursively."""
  found = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, folder)] = f.read()
  return found


def _shard(out, split='train', number=1) -> str:
  return os.path.join(out, image_records.read_index(str(out)).splits[split].shards[number])


def _flip(path, offset=2000) -> None:
  """Eight bytes inverted inside the shard's third or so record: its size and record count
  stay as they were (the records of these small pictures fill the shard's first kilobytes)."""
  with open(path, 'r+b') as f:
    f.seek(offset)
    data = f.read(8)
    f.seek(offset)
    f.write(bytes(b ^ 0xff for b in data))


def _one_error_line(err: str, error_type: str) -> str:
  """The one `error:` line, the last one on stderr (before it only log lines and progress
  bars), with no traceback anywhere."""
  lines = [line for line in err.splitlines() if line.strip() and '%|' not in line]
  assert lines and lines[-1].startswith(f'error: {error_type}: '), err[-3000:]
  assert all(line.startswith(('INFO ', 'WARNING ')) for line in lines[:-1]), err[-3000:]
  assert 'Traceback' not in err and 'Exception ignored' not in err, err[-3000:]
  return lines[-1]


# --- One writer per OUT ---------------------------------------------------------------------

@pytest.mark.parametrize('flags', [[], ['--overwrite', '--seed=1'], ['--shard_size=10']],
                         ids=['same_options', 'overwrite_other_seed', 'identical'])
def test_a_second_prepare_on_a_claimed_out_is_refused_at_once_and_touches_nothing(
    src, prepared, tmp_path, capsys, flags):
  out = _copy(prepared, tmp_path)
  # What a running prepare_images holds: an flock on OUT/.lock, its holder written inside.
  holder = os.open(out / '.lock', os.O_RDWR | os.O_CREAT)
  fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(holder, f'pid {os.getpid()} on host {socket.gethostname()}\n'.encode())
  try:
    before = _contents(out)
    started = time.monotonic()
    assert script.main([str(src), str(out), '--workers=1', *flags]) == 2
    assert time.monotonic() - started < 10
    line = _one_error_line(capsys.readouterr().err, 'WorkdirBusyError')
    assert f"output folder '{out}' is being written by another prepare_images" in line
    assert f'(pid {os.getpid()} on host ' in line
    assert _contents(out) == before
  finally:
    os.close(holder)
  # Once released (as the kernel does when the holder dies), the same command works, and
  # takes the lock file away with it.
  assert script.main([str(src), str(out), '--workers=1', '--shard_size=10']) == 0
  assert not (out / '.lock').exists()


def test_no_lock_file_is_left_after_a_finished_or_a_failed_run(src, tmp_path):
  out = tmp_path / 'out'
  prepare_images(str(src), str(out), PrepareOptions(shard_size=20))
  assert not (out / '.lock').exists()
  with pytest.raises(DatasetError, match='of another dataset'):
    prepare_images(str(src), str(out), PrepareOptions(shard_size=30))
  assert not (out / '.lock').exists()
  with pytest.raises(DatasetError, match='no class folders'):
    prepare_images(str(src / 'blue_disc'), str(tmp_path / 'new' / 'out'))
  assert not (tmp_path / 'new').exists()


@pytest.mark.slow  # Three script runs in subprocesses (~8 s).
def test_two_writers_racing_on_one_out_never_mix_their_shards(src, tmp_path):
  # The case: seed 0, then seed 1 with --overwrite while the first is converting.
  # The first is stopped (SIGSTOP) after its first shard, so the second surely meets it
  # mid-conversion, then let go.
  unbroken = tmp_path / 'unbroken'
  prepare_images(str(src), str(unbroken), PrepareOptions(shard_size=1, seed=0))
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHONPATH=REPO)
  first = subprocess.Popen([sys.executable, SCRIPT, str(src), str(out), '--seed=0',
                            '--shard_size=1', '--workers=1'], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(n.endswith('.array_record') for n in os.listdir(out))):
      if first.poll() is not None or time.monotonic() > deadline:
        first.kill()
        pytest.fail(f'no shard written: {first.communicate()}')
      time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)
    assert not (out / 'index.json').exists(), 'finished before it could be stopped'
    second = subprocess.run([sys.executable, SCRIPT, str(src), str(out), '--seed=1',
                             '--overwrite', '--shard_size=1', '--workers=1'], env=env,
                            capture_output=True, text=True, timeout=120)
  finally:
    first.send_signal(signal.SIGCONT)
  assert second.returncode == 2, second.stderr[-3000:]
  line = _one_error_line(second.stderr, 'WorkdirBusyError')
  assert str(out) in line and f'(pid {first.pid} on host ' in line
  stdout, stderr = first.communicate(timeout=120)
  assert first.returncode == 0, stderr[-3000:]
  # The first run's dataset, whole: the same bytes as an undisturbed preparation.
  assert _contents(out) == _contents(unbroken)


# --- The index commits the shards -----------------------------------------------------------

def test_the_index_lists_each_shards_size_and_sha256_and_is_the_identity(prepared):
  index = image_records.read_index(str(prepared))
  assert index.has_checksums
  for split in index.splits.values():
    for name, size, digest in zip(split.shards, split.shard_bytes, split.sha256):
      data = (prepared / name).read_bytes()
      assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
  expected = 'sha256:' + hashlib.sha256((prepared / 'index.json').read_bytes()).hexdigest()
  assert index.identity == expected and images.open_images(str(prepared)).identity == expected


@pytest.mark.parametrize('how', ['overwrite', 'repair'])
def test_the_index_is_gone_before_any_shard_is_written_and_written_last(
    src, prepared, tmp_path, monkeypatch, how):
  out = _copy(prepared, tmp_path)
  if how == 'repair':
    _flip(_shard(out))
  written = []
  real = image_records.write_shard

  def watched(path, records):
    written.append((os.path.basename(path), (out / 'index.json').exists()))
    real(path, records)

  monkeypatch.setattr(image_records, 'write_shard', watched)
  options = PrepareOptions(shard_size=10, seed=1 if how == 'overwrite' else 0)
  prepare_images(str(src), str(out), options, overwrite=how == 'overwrite')
  assert written and not any(index_there for _, index_there in written)
  assert (out / 'index.json').exists()
  index = image_records.read_index(str(out))
  assert index.storage['seed'] == options.seed
  for split in index.splits:
    image_records.shard_paths(str(out), index, split, full_check=True)


# --- Checks on opening ----------------------------------------------------------------------

def _damage(out, how):
  shard = _shard(out)
  if how == 'missing':
    os.remove(shard)
  elif how == 'truncated':
    with open(shard, 'r+b') as f:
      f.truncate(os.path.getsize(shard) - 4096)
  elif how == 'grown':
    with open(shard, 'ab') as f:
      f.write(b'\0' * 10)
  else:
    _flip(shard)
  return shard


@pytest.mark.parametrize('how, found', [
    ('missing', 'no such shard'), ('truncated', r'\d+ bytes; expected \d+'),
    ('grown', r'\d+ bytes; expected \d+'), ('flipped', 'SHA-256 [0-9a-f]{16}...; expected')])
def test_a_damaged_shard_is_named_on_opening_with_what_to_do(prepared, tmp_path, how, found):
  out = _copy(prepared, tmp_path)
  shard = _damage(out, how)
  with pytest.raises(DatasetError) as caught:
    images.open_images(str(out))
  message = str(caught.value)
  assert message.startswith(f'{shard}: ') and re.search(found, message), message
  assert 'rerun experiments/prepare_images.py with the same SRC, OUT and options' in message


def test_a_shard_damaged_past_the_start_check_is_named_when_read(prepared, tmp_path,
                                                                 monkeypatch):
  out = _copy(prepared, tmp_path)
  shard = _shard(out)
  _flip(shard)
  monkeypatch.setattr(image_records, 'FULL_CHECK_BYTES', 0)  # As if the split were larger.
  dataset = images.open_images(str(out))  # Sizes and record counts are intact.
  with pytest.raises(DatasetError, match='SHA-256'):  # A full check on request finds it.
    image_records.shard_paths(str(out), image_records.read_index(str(out)), 'train',
                              full_check=True)
  failures = []
  for i in range(len(dataset.train)):
    try:
      pipeline.decode(dataset.train, i)
    except DatasetError as error:
      failures.append(str(error))
  assert failures, 'no record of the damaged shard failed to read'
  assert all(f.startswith(f'{shard}: record ') and 'cannot be read' in f and
             'rerun experiments/prepare_images.py' in f for f in failures), failures


def test_an_index_without_checksums_opens_with_a_note_and_a_rerun_adds_them(
    src, prepared, tmp_path, capsys):
  out = _copy(prepared, tmp_path)
  raw = json.loads((out / 'index.json').read_text())
  for split in raw['splits'].values():  # As an earlier version wrote it.
    del split['bytes'], split['sha256']
  (out / 'index.json').write_text(json.dumps(raw))
  dataset = images.open_images(str(out))
  assert 'its index carries no checksums' in dataset.source
  before = _contents(prepared)
  assert script.main([str(src), str(out), '--workers=1', '--shard_size=10']) == 0
  assert '6 missing, damaged or without a checksum rewritten' in capsys.readouterr().out
  assert _contents(out) == before


def test_an_image_folders_identity_is_its_listing(src, tmp_path):
  copy = tmp_path / 'folder'
  shutil.copytree(src, copy)
  first = images.open_images(str(copy)).identity
  assert first.startswith('sha256:') and images.open_images(str(copy)).identity == first
  assert images.open_images(str(copy), seed=1).identity != first  # Another held-out split.
  picture = next((copy / 'red_square').iterdir())
  os.utime(picture, ns=(0, 0))
  assert images.open_images(str(copy)).identity != first


# --- Repair by rerunning prepare ------------------------------------------------------------

def test_a_rerun_rewrites_a_damaged_and_a_missing_shard_and_says_which(
    src, prepared, tmp_path, capsys):
  out = _copy(prepared, tmp_path)
  flipped, missing = _shard(out, number=1), _shard(out, number=3)
  _flip(flipped)
  os.remove(missing)
  command = [str(src), str(out), '--workers=1', '--shard_size=10']
  assert script.main(command) == 0
  said = capsys.readouterr().out
  assert ('(already prepared: 4 shards checked against index.json and kept; 2 missing, '
          'damaged or without a checksum rewritten: ') in said, said
  assert os.path.basename(flipped) in said and os.path.basename(missing) in said
  assert _contents(out) == _contents(prepared)
  assert script.main(command) == 0
  assert 'its 6 shards checked against the SHA-256 in index.json, none rewritten' in \
      capsys.readouterr().out


# --- A full disk or no permission: one line, no temporary file ------------------------------

class _WriterOnAFullDisk:
  """An ArrayRecordWriter whose disk fills up: it starts the file, then fails as the real one
  does (a RuntimeError from C++ carrying the OS's words)."""

  def __init__(self, path, options):
    self.path = path
    with open(path, 'wb') as f:
      f.write(b'\0' * 4096)

  def write(self, record):
    pass

  def close(self):
    raise RuntimeError(f'write() failed: No space left on device; writing {self.path}; at '
                       'byte 307200; Failed to close chunk_writer')


def test_a_full_disk_while_writing_a_shard_is_one_line_and_leaves_no_temporary_file(
    src, tmp_path, capsys, monkeypatch):
  from array_record.python import array_record_module
  monkeypatch.setattr(array_record_module, 'ArrayRecordWriter', _WriterOnAFullDisk)
  out = tmp_path / 'out'
  assert script.main([str(src), str(out), '--workers=1', '--shard_size=10']) == 2
  line = _one_error_line(capsys.readouterr().err, 'StorageError')
  first = os.path.join(out, image_records.shard_name('train', 0, 5))
  assert line.startswith(f'error: StorageError: {first}: cannot be written (No space left on '
                         'device; ') and ' free on its filesystem)' in line, line
  assert not [n for n in _contents(out) if n.endswith(('.tmp', '.array_record', '.lock'))]


def test_no_permission_for_the_index_is_one_line_and_the_rerun_finishes(
    src, tmp_path, capsys, monkeypatch):
  real = os.replace

  def refused(source, target):
    if os.path.basename(target) == 'index.json':
      raise PermissionError(13, 'Permission denied', source)
    real(source, target)

  monkeypatch.setattr(os, 'replace', refused)
  out = tmp_path / 'out'
  assert script.main([str(src), str(out), '--workers=1', '--shard_size=10']) == 2
  line = _one_error_line(capsys.readouterr().err, 'StorageError')
  assert line.startswith(f"error: StorageError: {out / 'index.json'}: cannot be written "
                         '(Permission denied; '), line
  assert not [n for n in _contents(out) if n.endswith(('.tmp', '.lock'))]
  assert not (out / 'index.json').exists()
  monkeypatch.setattr(os, 'replace', real)
  assert script.main([str(src), str(out), '--workers=1', '--shard_size=10']) == 0
  assert '(6 kept from an earlier run)' in capsys.readouterr().out


def _can_mount_a_tmpfs() -> bool:
  try:
    return subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'],
                          capture_output=True, timeout=20).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


@pytest.mark.slow  # A script run in a subprocess.
@pytest.mark.skipif(not _can_mount_a_tmpfs(), reason='unshare -rm (a private tmpfs) not permitted')
def test_a_really_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
  big = tmp_path / 'big'
  write_image_folder(big, per_class=30, size=(200, 150))  # About 1.8 MB as stored.
  disk = tmp_path / 'disk'
  disk.mkdir()
  out = disk / 'out'
  # A 300 kB filesystem of this process's own, seen only inside `unshare`: after the run, its
  # contents are listed from inside too.
  inside = (f'mount -t tmpfs -o size=300k tmpfs {disk} && '
            f'{sys.executable} {SCRIPT} {big} {out} --workers=1 --shard_size=20; '
            f'echo "exit $?"; find {out} -type f')
  done = subprocess.run(['unshare', '-rm', 'sh', '-c', inside], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  assert 'exit 2' in done.stdout, done.stdout + done.stderr[-3000:]
  line = _one_error_line(done.stderr, 'StorageError')
  assert re.match(rf'error: StorageError: {out}/train-\d+-of-\d+\.array_record: cannot be '
                  r'written \(No space left on device; [\d.]+ k?B free on its filesystem\)',
                  line), line
  left = done.stdout.split('exit 2', 1)[1].split()
  assert not [n for n in left if n.endswith(('.tmp', '.lock'))], left


# --- Training and evaluation ----------------------------------------------------------------

def _train(workdir, data_dir, workers):
  """The tiny config on `data_dir` with its smallest net (what it trains does not matter,
  only what reading its data does; this net compiles fastest)."""
  return fh.run_train(workdir, '--config.data.name=images', f'--config.data.data_dir={data_dir}',
                      '--config.model.num_classes=3', '--config.model.name=cifar_resnet8',
                      f'--config.speed.data_workers={workers}', '--config.train.num_steps=40')


@pytest.mark.slow  # Training runs in subprocesses (seconds each).
@pytest.mark.parametrize('when, workers', [('start', 0), ('read', 0), ('read', 2)])
def test_training_on_a_damaged_shard_ends_in_one_line_naming_it(tmp_path, when, workers):
  data = str(tmp_path / 'data')
  if when == 'start':  # Checksums in the index: the start check finds the flipped bytes.
    folder = _image_data.make_folder(str(tmp_path / 'src'), per_class=40)
    prepare_images(folder, data, PrepareOptions(shard_size=40))
  else:  # No checksums (an index of an earlier version): only reading the record finds it.
    _image_data.make_shards(data, 240, 30)
  shard = _shard(data)
  _flip(shard)
  workdir = tmp_path / 'run'
  done = _train(str(workdir), data, workers)
  assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
  line = _one_error_line(done.stderr, 'DatasetError')
  assert line.startswith(f'error: DatasetError: {shard}: ')
  assert 'rerun experiments/prepare_images.py with the same SRC, OUT and options' in line
  if when == 'start':  # Refused before the first step: the run left no workdir.
    assert 'SHA-256' in line and not workdir.exists()
  else:
    assert re.search(r': record \d+ \(record \d+ of the shards of its split\): cannot be read '
                     r'\(.*hash mismatch', line), line
