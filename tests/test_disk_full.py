"""A write that fails for lack of space ends a script with one `error: StorageError:` line
naming the path and the free space, exit code 2, the last good checkpoint intact and no
partial file; the rerun after freeing space resumes exactly.

Two ways to run out of room, both real failures of the OS:
- a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored): every write past it fails with
  EFBIG, in this process and in the checkpoint library's native threads alike. Always runs.
- a small tmpfs mounted in a user and mount namespace (`unshare -rm`), where a write fails
  with ENOSPC as on a full disk, for whole scripts. Skipped where unshare is not permitted.
"""
import contextlib
import errno
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import _fault_helpers as fh
from helpers import LogRecords
from resnet_jax import storage
from resnet_jax.errors import StorageError
from resnet_jax.train import checkpoint as checkpoint_lib, metrics as metrics_lib

resource = pytest.importorskip('resource')  # POSIX.

# A failed save's leftover writes may only be reported at garbage collection.
pytestmark = pytest.mark.filterwarnings(
    'ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning')


@contextlib.contextmanager
def file_size_limit(limit: int):
  """Writes past `limit` bytes of any file fail with EFBIG while the block runs."""
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def _state(size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {'params': {f'layer{i}': {'kernel': rng.normal(size=(size,)).astype(np.float32)}
                     for i in range(40)}}


# ---------------------------------------------------------------- checkpoints


def test_a_checkpoint_save_that_runs_out_of_room_is_one_storage_error(tmp_path, capfd):
  """Orbax's asynchronous save fails in its own threads; the error comes at the next save
  (or wait) as one StorageError naming that checkpoint, nothing else is printed or logged,
  its half-written directory is gone and the earlier checkpoint restores."""
  small, big = _state(64, seed=1), _state(16384, seed=2)  # 10 kB, then 2.6 MB of arrays.
  records = LogRecords()
  for name in ('', 'absl', 'asyncio'):
    logging.getLogger(name).addHandler(records)
  try:
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
    with file_size_limit(1_000_000), pytest.raises(StorageError) as caught:
      checkpointer.save(1, small, {})
      checkpointer.save(2, big, {})
      checkpointer.save(3, small, {})  # Waits for step 2's save first: it failed.
      checkpointer.wait()
    checkpointer.close()
  finally:
    for name in ('', 'absl', 'asyncio'):
      logging.getLogger(name).removeHandler(records)
  message = str(caught.value)
  assert message.startswith(f'{checkpointer.path(2)}: cannot be written (File too large; ')
  assert ' free on its filesystem); expected room for it' in message
  assert f'the last checkpoint, {checkpointer.path(1)} (' in message
  assert message.endswith('is intact: rerun the same command after freeing space to resume '
                          'from it')
  assert caught.value.errno == errno.EFBIG
  assert sorted(os.listdir(checkpointer.directory)) == ['1']  # No half-written directory.
  assert not [line for line in records.lines if line.startswith(('WARNING', 'ERROR'))
              and 'did not provide metrics' not in line]  # (The scripts drop that note.)
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Event loop is closed' not in err, err

  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  step, state, _ = checkpointer.restore_latest(small)
  checkpointer.close()
  assert step == 1
  np.testing.assert_array_equal(state['params']['layer0']['kernel'],
                                small['params']['layer0']['kernel'])


def test_the_error_orbax_raises_for_a_full_disk_becomes_a_storage_error(tmp_path, monkeypatch):
  """The words tensorstore uses (no OSError): RESOURCE_EXHAUSTED and its os_error_code."""
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3, async_save=False)
  checkpointer.save(1, _state(8), {})
  orbax_error = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "params.layer0.kernel/0" in OCDBT database at local '
      f'file "{tmp_path}/checkpoints/2.orbax-checkpoint-tmp/": Failed to write 1006104 bytes '
      "to file 6: No space left on device [os_error_code='28']")

  def save(*args, **kwargs):
    os.makedirs(os.path.join(checkpointer.directory, '2.orbax-checkpoint-tmp', 'state'))
    raise orbax_error

  monkeypatch.setattr(checkpointer.manager, 'save', save)
  with pytest.raises(StorageError, match=r'^.*/checkpoints/2: cannot be written \(No space '
                     r'left on device; .* free on its filesystem\); expected room') as caught:
    checkpointer.save(2, _state(8), {})
  assert caught.value.__cause__ is orbax_error
  assert caught.value.errno == errno.ENOSPC
  assert sorted(os.listdir(checkpointer.directory)) == ['1']
  checkpointer.close()  # Quiet: the failure was reported once.


# ---------------------------------------------------------------- metrics and files


def test_a_metrics_line_that_does_not_fit_is_cut_back_not_left_torn(tmp_path):
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write(2, {'train_loss': 1.0})
  path = tmp_path / metrics_lib.JSONL_NAME
  before = path.read_bytes()
  with file_size_limit(len(before) + 20), pytest.raises(StorageError) as caught:
    writer.write(4, {'train_loss': 0.5, 'train_accuracy': 0.25, 'learning_rate': 0.1})
  writer.close()
  assert str(caught.value).startswith(f'{path}: cannot be written (File too large; ')
  assert path.read_bytes() == before  # The record's first 20 bytes were written, then cut.


def test_tensorboard_events_that_do_not_fit_are_an_error_not_a_hang(tmp_path):
  """tensorboardX's writer thread dies on a failed write and the writer then blocks for
  good; here the failure is a StorageError naming the event file, at once. (metrics.jsonl
  goes to /dev/null, which has no size limit, so that the event file is the one to fail.)"""
  os.symlink(os.devnull, tmp_path / metrics_lib.JSONL_NAME)
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)
  outcome = {}

  def write_many():
    try:
      for step in range(1, 2001):
        writer.write(step, {'train_loss': 1.0 / step, 'train_accuracy': 0.5})
        if step % 100 == 0:
          writer.flush()
    except Exception as error:  # noqa: BLE001 (the test looks at it)
      outcome['error'] = error

  with file_size_limit(4096):
    thread = threading.Thread(target=write_many, daemon=True)
    thread.start()
    thread.join(timeout=20)
  assert not thread.is_alive(), 'the metric writer blocked after a failed event write'
  writer.close()
  error = outcome.get('error')
  assert isinstance(error, StorageError), error
  events = os.listdir(tmp_path / 'tensorboard')
  assert len(events) == 1 and str(error).startswith(
      f'{tmp_path / "tensorboard" / events[0]}: cannot be written (File too large; ')
  assert os.path.getsize(tmp_path / 'tensorboard' / events[0]) <= 4096


def test_a_metric_writer_that_cannot_create_its_file_is_a_storage_error(tmp_path, monkeypatch):
  def no_space(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', path)

  with monkeypatch.context() as patch:  # The OS refuses to make files, however asked.
    patch.setattr(metrics_lib.os, 'open', no_space)
    patch.setattr('builtins.open', no_space)
    with pytest.raises(StorageError) as caught:
      metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  assert str(caught.value).startswith(f'{tmp_path}/metrics.jsonl: cannot be written (No space '
                                      'left on device; ')


def test_results_and_figures_that_do_not_fit_leave_the_old_file_and_no_temporary(tmp_path):
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib.figure import Figure

  from resnet_jax.train import plots
  results = tmp_path / 'results.json'
  storage.write_json_atomic(str(results), {'kept': True})
  with file_size_limit(64), pytest.raises(StorageError, match=rf'^{results}: cannot be '
                                          r'written \(File too large; '):
    storage.write_json_atomic(str(results), {'rows': list(range(100))})
  fig = Figure()
  fig.add_subplot().plot([0, 1])
  with file_size_limit(1000), pytest.raises(StorageError, match=r'figure.png: cannot be'):
    storage.save_figure_atomic(fig, str(tmp_path / 'figure.png'))
  metrics = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  metrics.write(2, {'train_loss': 1.0, 'train_accuracy': 0.5})
  metrics.close()
  with file_size_limit(1000), pytest.raises(StorageError, match=r'training_curves.png: cannot'):
    plots.plot_training_curves(metrics.path, str(tmp_path / plots.PLOT_NAME))
  assert sorted(os.listdir(tmp_path)) == [metrics_lib.JSONL_NAME, 'results.json']
  assert results.read_text() == '{\n "kept": true\n}\n'


# ---------------------------------------------------------------- the scripts' net


def test_a_write_failure_escaping_a_script_is_one_line_and_a_bug_keeps_its_traceback(
    tmp_path, capsys):
  from experiments import cli
  script = cli.Script('A script.')
  target = str(tmp_path / 'out' / 'table.md')

  def full_disk(argv):
    raise OSError(errno.ENOSPC, 'No space left on device', target)

  assert script.run(full_disk, []) == cli.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert err.splitlines() == [err.strip()] and err.startswith(
      f'error: StorageError: {target}: cannot be written (No space left on device; ')

  def unnamed(argv):  # A write to an open file: the OS names no file.
    raise OSError(errno.ENOSPC, 'No space left on device')

  assert script.run(unnamed, []) == cli.EXIT_BAD_INPUT
  assert capsys.readouterr().err.startswith(
      'error: StorageError: a file cannot be written (No space left on device; the OS did '
      'not say which file)')

  def bug(argv):
    raise FileNotFoundError(errno.ENOENT, 'No such file or directory', target)

  with pytest.raises(FileNotFoundError):
    script.run(bug, [])


# ---------------------------------------------------------------- a real full disk


def _namespace_mounts_work(directory) -> bool:
  try:
    done = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs '
                           + shlex.quote(str(directory))], capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return False
  return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
  """A function that runs a shell script with a tmpfs of a given size mounted at
  tmp_path/'disk' (in a namespace of its own); skips where that is not permitted."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  if not _namespace_mounts_work(disk):
    pytest.skip('cannot mount a tmpfs in a user namespace here (unshare -rm)')

  def run(size: str, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    mount = f'mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(disk))} || exit 99\n'
    done = subprocess.run(['unshare', '-rm', 'sh', '-c', mount + script], cwd=fh.REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=fh.subprocess_env())
    assert done.returncode != 99, done.stderr
    return done

  run.disk = disk
  return run


def _problems(stderr: str) -> list:
  """stderr's lines other than the run's INFO lines."""
  return [line for line in stderr.splitlines() if not line.startswith('INFO ')]


def _train(workdir, log: str, code: str) -> str:
  """A shell line that runs train.py (tiny config), its stderr to `log`, its exit code to
  `code`."""
  command = ' '.join(shlex.quote(arg) for arg in fh.train_command(workdir))
  return f'{command} > /dev/null 2> {shlex.quote(log)}; echo $? > {shlex.quote(code)}\n'


@pytest.mark.slow  # Three tiny training runs.
def test_a_checkpoint_that_fills_the_disk_is_one_line_and_the_rerun_resumes_exactly(
    small_disk, tmp_path, tmp_path_factory):
  """tiny_test's checkpoints take 2.6 MB each: on a 4 MB disk the first fits and the second
  does not; after the disk grows (space freed) the rerun resumes from the first."""
  reference = fh.reference_run(tmp_path_factory)
  workdir = small_disk.disk / 'run'
  kept = tmp_path / 'kept'
  logs = {name: str(tmp_path / name) for name in ('err1', 'code1', 'err2', 'code2')}
  script = (_train(workdir, logs['err1'], logs['code1'])
            + f'ls {shlex.quote(str(workdir / "checkpoints"))} > {tmp_path / "after_failure"}\n'
            + f'mount -o remount,size=16m {shlex.quote(str(small_disk.disk))}\n'
            + _train(workdir, logs['err2'], logs['code2'])
            + f'cp -a {shlex.quote(str(workdir))} {shlex.quote(str(kept))}\n')
  small_disk('4m', script)
  first = open(logs['err1']).read()
  assert open(logs['code1']).read().strip() == '2', first
  problems = _problems(first)
  assert len(problems) == 1, first
  line = problems[0]
  assert line.startswith(f'error: StorageError: {workdir}/checkpoints/8: cannot be written '
                         '(No space left on device; ')
  assert ' free on its filesystem); expected room for it (free space there, or write ' in line
  assert f'the last checkpoint, {workdir}/checkpoints/4 (2.6 MB), is intact' in line
  assert (tmp_path / 'after_failure').read_text().split() == ['4']  # No half-written one.
  second = open(logs['err2']).read()
  assert open(logs['code2']).read().strip() == '0', second
  assert f'resuming from checkpoint {workdir}/checkpoints/4 (step 4)' in second
  fh.assert_run_equals(kept, reference, fh.TINY_STEPS, tmp_path)


@pytest.mark.slow  # A train.py subprocess.
def test_a_workdir_on_a_disk_full_at_start_is_one_line_and_leaves_nothing(small_disk, tmp_path):
  workdir = small_disk.disk / 'run'
  filler = shlex.quote(str(small_disk.disk / 'filler'))
  script = (f'cat /dev/zero > {filler} 2> /dev/null\n'
            + _train(workdir, str(tmp_path / 'err'), str(tmp_path / 'code'))
            + f'ls -A {shlex.quote(str(small_disk.disk))} > {tmp_path / "left"}\n')
  small_disk('1m', script)
  err = (tmp_path / 'err').read_text()
  assert (tmp_path / 'code').read_text().strip() == '2', err
  problems = _problems(err)
  assert len(problems) == 1 and problems[0].startswith('error: StorageError: '), err
  assert f'{workdir}/' in problems[0] and '(No space left on device; 0 B free' in problems[0]
  assert (tmp_path / 'left').read_text().split() == ['filler']


def test_a_figure_on_a_full_disk_is_one_line_and_no_file(small_disk, tmp_path):
  out = small_disk.disk / 'grid.png'
  filler = shlex.quote(str(small_disk.disk / 'filler'))
  done = small_disk('1m', f'cat /dev/zero > {filler} 2> /dev/null\n'
                    f'{shlex.quote(sys.executable)} experiments/signs_grid.py --per_class 2 '
                    f'--out {shlex.quote(str(out))}; echo "exit $?"\n'
                    f'ls -A {shlex.quote(str(small_disk.disk))}\n', timeout=120)
  assert done.stderr.splitlines() == [
      f'error: StorageError: {out}: cannot be written (No space left on device; 0 B free on '
      'its filesystem); expected room for it (free space there, or write elsewhere)'], done.stderr
  assert done.stdout.split() == ['exit', '2', 'filler']
