"""Data workers that die or are interrupted: a worker killed (the out-of-memory killer's
SIGKILL) ends a run with one line naming it and the rerun resumes exactly; an error a worker
raises reaches the reader as itself; Ctrl-C to the whole process group stops the run as
without workers, with nothing from the workers, while they work and while they start.

The in-process tests run the pipeline (resnet_jax.data.pipeline.iterate) with two workers;
the slow ones look at one chain of experiments/train.py runs (tests/_fault_helpers.py, the
tiny config) with config.speed.data_workers=2 on one workdir, each broken run rerun by the
next, the last rerun against the shared unbroken run.
"""
import io
import os
import re
import signal
import subprocess
import time

import _image_data
import numpy as np
import pytest
from PIL import Image

import _fault_helpers as fh
from resnet_jax.data import image_records, images, pipeline
from resnet_jax.data.layout import BatchLayout
from resnet_jax.data.types import Split
from resnet_jax.errors import DatasetError, DataWorkerError

WORKERS = ('--config.speed.data_workers=2',)
# What the pipeline says of a worker killed with SIGKILL (as the out-of-memory killer does).
KILLED = (r'a data worker process \(pid {pid}\) died \(killed by signal 9 \(SIGKILL\): out of '
          r'memory\?\)')


def _spawned_children(pid: int) -> list:
  """Pids of the processes `pid` started with multiprocessing's spawn (Grain's workers), in
  the order they were started."""
  found = []
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/stat') as f:
        parent = int(f.read().rsplit(')', 1)[1].split()[1])
      with open(f'/proc/{name}/cmdline', 'rb') as f:
        command = f.read()
    except (OSError, IndexError, ValueError):
      continue  # Gone meanwhile.
    if parent == pid and b'spawn_main' in command:
      found.append(int(name))
  return sorted(found)


def _ignored_signals(pid: int) -> set:
  with open(f'/proc/{pid}/status') as f:
    mask = int(re.search(r'^SigIgn:\s*([0-9a-f]+)$', f.read(), re.M).group(1), 16)
  return {number for number in signal.Signals if mask >> (number - 1) & 1}


def _batches(num_steps: int, workers: int = 2):
  """The pipeline of `num_steps` training batches of 4 random 8x8 arrays."""
  rng = np.random.default_rng(0)
  split = Split(rng.integers(0, 256, (16, 8, 8, 3)).astype(np.uint8),
                np.arange(16, dtype=np.int32) % 3)
  data = pipeline.train_dataset(split, BatchLayout(4, (0,), 4), pipeline.Recipe(8), 0,
                                num_steps)
  return pipeline.iterate(data, 1, workers)


def _started_workers(batches, before: list) -> list:
  """Takes the first two batches (one from each worker: both are up then); the pids of the
  new workers."""
  next(batches)
  next(batches)
  workers = [pid for pid in _spawned_children(os.getpid()) if pid not in before]
  assert len(workers) == 2
  return workers


@pytest.mark.slow  # Starts Grain worker processes.
def test_a_killed_worker_is_a_data_worker_error_naming_it():
  before = _spawned_children(os.getpid())
  batches = _batches(400)
  try:
    victim = _started_workers(batches, before)[0]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(DataWorkerError, match=KILLED.format(pid=victim) + '$'):
      for _ in batches:
        pass
  finally:
    batches.close()


@pytest.mark.slow  # Starts Grain worker processes.
def test_workers_ignore_sigint_and_sigterm_and_go_on():
  before = _spawned_children(os.getpid())
  batches = _batches(40)
  try:
    workers = _started_workers(batches, before)
    for pid in workers:
      assert {signal.SIGINT, signal.SIGTERM} <= _ignored_signals(pid)
      os.kill(pid, signal.SIGINT)
      os.kill(pid, signal.SIGTERM)
    rest = list(batches)
  finally:
    batches.close()
  assert len(rest) == 38
  expected = list(_batches(40, workers=0))[2:]
  for a, b in zip(rest, expected, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])


@pytest.mark.slow  # Starts Grain worker processes.
def test_an_error_raised_in_a_worker_reaches_the_reader_as_itself(tmp_path):
  out = str(tmp_path / 'shards')
  _image_data.make_shards(out, 8, 2, shards_per_split=1)
  path = os.path.join(out, image_records.read_index(out).splits['train'].shards[0])
  good = io.BytesIO()
  Image.new('RGB', (4, 4)).save(good, format='PNG')
  image_records.write_shard(path, [image_records.encode_record(0, good.getvalue())] * 7
                            + [image_records.encode_record(1, b'not an image')])
  data = pipeline.train_dataset(images.open_images(out).train, BatchLayout(4, (0,), 4),
                                pipeline.Recipe(8), 0, 4)
  with pytest.raises(DatasetError, match='not an image') as raised:
    list(pipeline.iterate(data, 1, 2))
  assert not isinstance(raised.value, DataWorkerError)


# ------------------------------------------------------------- train.py with data workers

def _start_in_own_group(workdir, log_path, *flags) -> subprocess.Popen:
  """train.py with two data workers, in a process group of its own (as a shell starts a
  command: Ctrl-C goes to the whole group)."""
  with open(log_path, 'ab') as log:
    process = subprocess.Popen(fh.train_command(workdir, *WORKERS, *flags), cwd=fh.REPO,
                               stdout=log, stderr=subprocess.STDOUT, env=fh.subprocess_env(),
                               start_new_session=True)
  process.log_path = log_path
  return process


def _finish_or_kill_group(process: subprocess.Popen, timeout: float = 90) -> int:
  try:
    return process.wait(timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    raise AssertionError(f'train.py hung for {timeout} s:\n{fh.read_log(process)[-3000:]}')


def _new_metric_step(workdir, before: list):
  """A condition: metrics.jsonl holds a step past all of `before` (this run has trained)."""
  return lambda: max(fh.metric_steps(workdir), default=0) > max(before, default=0)


def _stop_with_ctrl_c(workdir, log_path, when: str) -> dict:
  """Starts train.py on `workdir` and sends SIGINT to its whole group `when`:
  'workers_starting' (both spawned) or 'training' (a step of its own logged); its code and
  log."""
  before = fh.metric_steps(workdir)
  process = _start_in_own_group(workdir, log_path)
  try:
    if when == 'training':
      fh.wait_until(_new_metric_step(workdir, before), process)
    else:  # Each worker is a new Python importing its libraries: seconds to start.
      fh.wait_until(lambda: len(_spawned_children(process.pid)) == 2, process)
      time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    code = _finish_or_kill_group(process)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  return {'code': code, 'log': fh.read_log(process)}


def _kill_a_worker(workdir, log_path) -> dict:
  """Starts train.py on `workdir` and SIGKILLs its first data worker once it has trained a
  step; its code, log, the victim's pid and the seconds from the kill to the exit."""
  before = fh.metric_steps(workdir)
  # A checkpoint every step slows the steps down, so that the worker dies with batches of
  # the run still to make (and the message names a checkpoint).
  process = _start_in_own_group(workdir, log_path, '--config.run.checkpoint_every_steps=1')
  try:
    fh.wait_until(_new_metric_step(workdir, before), process)
    victim = _spawned_children(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    code = _finish_or_kill_group(process)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  return {'code': code, 'log': fh.read_log(process), 'victim': victim,
          'seconds': time.monotonic() - killed}


@pytest.fixture(scope='module')
def broken_runs(tmp_path_factory):
  """One workdir through three broken runs of train.py with two data workers, each the rerun
  of the one before (the same command), then a last rerun to the end: Ctrl-C while the
  workers start (a new workdir), Ctrl-C while training, a worker killed while training.
  Each run's outcome, the committed checkpoints and tmp directories the kill left, and the
  last rerun. (One chain of reruns, not one rerun per fault: each train.py run with workers
  costs seconds of start-up; the last rerun matches the unbroken run only if every resume
  along the chain was exact.)"""
  root = tmp_path_factory.mktemp('worker_faults')
  workdir = str(root / 'run')
  runs = {'workdir': workdir}
  for when in ('workers_starting', 'training'):
    runs[when] = _stop_with_ctrl_c(workdir, str(root / f'{when}.log'), when)
  # These stop a few steps in: the kill comes with many of the 24 steps still to make (the
  # death shows once the batches the workers made before it are used, about ten steps on).
  runs['killed'] = _kill_a_worker(workdir, str(root / 'killed.log'))
  runs['killed'].update(committed=fh.committed_steps(workdir), tmp=fh.tmp_checkpoints(workdir))
  runs['rerun'] = fh.run_train(workdir, *WORKERS)
  return runs


@pytest.mark.slow  # Shares broken_runs: four train.py runs (and the shared unbroken one).
@pytest.mark.parametrize('when', ['workers_starting', 'training'])
def test_ctrl_c_with_workers_is_quiet(broken_runs, when):
  code, log = broken_runs[when]['code'], broken_runs[when]['log']
  assert code == 0, log[-3000:]
  assert 'Traceback' not in log and 'KeyboardInterrupt' not in log, log[-3000:]
  assert 'stopped by SIGINT' in log, log[-3000:]


@pytest.mark.slow  # Shares broken_runs.
def test_a_killed_worker_ends_the_run_with_one_line(broken_runs):
  killed = broken_runs['killed']
  log = killed['log']
  assert killed['code'] == 2, log[-3000:]
  assert 'Traceback' not in log
  last = log.strip().splitlines()[-1]
  match = re.fullmatch(
      'error: DataWorkerError: ' + KILLED.format(pid=killed['victim']) + r' at step (\d+); '
      r'(?:the checkpoints already saved are intact; rerun the same command to resume from the '
      r'last one|the last checkpoint \((\S+), step (\d+)\) is intact; rerun the same command to '
      'resume)', last)
  assert match, last
  print(f'\n{last}\nexited {killed["seconds"]:.1f} s after the kill')
  assert killed['tmp'] == []
  saved = killed['committed'][-1]
  assert saved <= int(match.group(1))
  if match.group(2):  # The run named its last checkpoint.
    assert (match.group(2), int(match.group(3))) == (
        os.path.join(os.path.abspath(broken_runs['workdir']), 'checkpoints', str(saved)), saved)


@pytest.mark.slow  # Shares broken_runs.
def test_the_reruns_resume_exactly(broken_runs, tmp_path_factory, tmp_path):
  reference = fh.reference_run(tmp_path_factory)
  workdir, done = broken_runs['workdir'], broken_runs['rerun']
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"resumed from: step {broken_runs['killed']['committed'][-1]}" in done.stdout
  fh.assert_run_equals(workdir, reference, fh.TINY_STEPS, tmp_path)
