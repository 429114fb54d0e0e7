"""Shared by the fault-tolerance tests: subprocess runs of experiments/train.py and ways to
look at a workdir without changing it (the in-process model and data are in helpers.py).

Subprocess runs use experiments/configs/tiny_test.py (a CIFAR ResNet-20 on 8x8 fake
images, 24 steps, a checkpoint every 4) with a persistent compilation cache shared by all
runs of one test session (both xdist workers: conftest.py), so that only the first run of
each device count compiles.
"""
import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from resnet_jax.train import checkpoint as checkpoint_lib
from resnet_jax.train.metrics import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO, 'experiments', 'train.py')
TINY_CONFIG = os.path.join(REPO, 'experiments', 'configs', 'tiny_test.py')
TINY_STEPS = 24  # tiny_test.py: train.num_steps
TINY_SAVE_EVERY = 4  # tiny_test.py: run.checkpoint_every_steps
TMP_MARKER = '.orbax-checkpoint-tmp'
# Record fields that differ between identical runs by nature.
TIMING_FIELDS = ('images_per_sec',)

_CACHE_DIR = None  # One compilation cache per test session (see compilation_cache_dir).
_REFERENCE = {}  # Unbroken subprocess runs, computed once per session (see reference_run).


# ---------------------------------------------------------------- subprocess runs

def compilation_cache_dir() -> str:
  """A persistent JAX compilation cache for this session's subprocess runs: conftest.py's,
  shared by the xdist workers, or else one of this process's own."""
  global _CACHE_DIR
  if _CACHE_DIR is None:
    _CACHE_DIR = os.environ.get('RESNET_JAX_TEST_JIT_CACHE')
    if not _CACHE_DIR or not os.path.isdir(_CACHE_DIR):
      _CACHE_DIR = tempfile.mkdtemp(prefix='resnet_jax_test_jit_cache_')
      atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  return _CACHE_DIR


def subprocess_env(devices: int = 1, **extra) -> dict:
  """The environment of a CPU-only train.py run with `devices` host devices."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
  env.update(
      JAX_PLATFORMS='cpu',
      XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
      JAX_COMPILATION_CACHE_DIR=compilation_cache_dir(),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
      PYTHONUNBUFFERED='1',
      PYTHONPATH=REPO + os.pathsep + env.get('PYTHONPATH', ''),
  )
  env.update(extra)
  return env


def train_command(workdir, *flags, config: str = TINY_CONFIG) -> list:
  return [sys.executable, TRAIN_SCRIPT, f'--config={config}', f'--workdir={workdir}', *flags]


def start_train(workdir, *flags, log_path=None, devices: int = 1, env=None,
                config: str = TINY_CONFIG) -> subprocess.Popen:
  """Starts train.py; stdout and stderr go (together) to `log_path` (a file)."""
  log_path = log_path or os.path.join(os.path.dirname(str(workdir)),
                                      f'{os.path.basename(str(workdir))}.log')
  log_file = open(log_path, 'ab')
  process = subprocess.Popen(train_command(workdir, *flags, config=config), cwd=REPO,
                             stdout=log_file, stderr=subprocess.STDOUT,
                             env=env or subprocess_env(devices))
  process.log_path = log_path
  log_file.close()
  return process


def run_train(workdir, *flags, timeout: float = 180, devices: int = 1, env=None,
              config: str = TINY_CONFIG) -> subprocess.CompletedProcess:
  """Runs train.py to the end; returns the CompletedProcess with text stdout/stderr."""
  return subprocess.run(train_command(workdir, *flags, config=config), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=env or subprocess_env(devices))


def read_log(process: subprocess.Popen) -> str:
  with open(process.log_path, errors='replace') as f:
    return f.read()


def finish(process: subprocess.Popen, timeout: float = 180) -> int:
  try:
    return process.wait(timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise AssertionError(f'train.py did not finish in {timeout} s:\n{read_log(process)[-3000:]}')


def wait_until(condition, process: subprocess.Popen, timeout: float = 120,
               poll: float = 0.002) -> None:
  """Polls `condition()` until true; fails if the process exits first or time runs out."""
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      if condition():
        return
      raise AssertionError(f'train.py exited (code {process.returncode}) before the awaited '
                           f'event:\n{read_log(process)[-3000:]}')
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError(f'awaited event did not happen in {timeout} s:\n'
                           f'{read_log(process)[-3000:]}')
    time.sleep(poll)


def signal_at_marker(process: subprocess.Popen, marker: str, number=signal.SIGTERM,
                     timeout: float = 120) -> str:
  """Waits for the file `marker`, sends signal `number`, expects exit 0; returns the log."""
  wait_until(lambda: os.path.exists(marker), process)
  process.send_signal(number)
  assert finish(process, timeout=timeout) == 0, read_log(process)[-3000:]
  return read_log(process)


def kill_now(process: subprocess.Popen, number=signal.SIGKILL) -> None:
  process.send_signal(number)
  if number == signal.SIGKILL:
    process.wait(30)


def reference_run(tmp_path_factory) -> str:
  """The workdir of an unbroken tiny run that keeps every checkpoint (once per session)."""
  if 'workdir' not in _REFERENCE:
    workdir = str(tmp_path_factory.mktemp('reference') / 'run')
    done = run_train(workdir, '--config.run.keep_checkpoints=100')
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    _REFERENCE['workdir'] = workdir
  return _REFERENCE['workdir']


# ---------------------------------------------------------------- looking at a workdir

def checkpoint_dir(workdir) -> str:
  return os.path.join(str(workdir), 'checkpoints')


def committed_steps(workdir) -> list:
  """Steps with a finalized checkpoint directory (orbax renames the tmp dir when done)."""
  try:
    names = os.listdir(checkpoint_dir(workdir))
  except FileNotFoundError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


def tmp_checkpoints(workdir) -> list:
  """Names of checkpoint directories being written (or left half-written)."""
  try:
    return sorted(n for n in os.listdir(checkpoint_dir(workdir)) if TMP_MARKER in n)
  except FileNotFoundError:
    return []


def metric_steps(workdir, strict: bool = False) -> list:
  """The steps metrics.jsonl holds. Not strict by default: a run may be writing the file (the
  triggers poll it) or have been killed mid-line; `strict` once no run writes it (every line
  a whole record, see read_jsonl)."""
  path = os.path.join(str(workdir), 'metrics.jsonl')
  return [r['step'] for r in read_jsonl(path, strict=strict)]


def records(workdir) -> list:
  """metrics.jsonl without timing fields, read strictly (a torn line fails the test)."""
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS}
          for r in read_jsonl(os.path.join(str(workdir), 'metrics.jsonl'), strict=True)]


def read_checkpoint(workdir, step: int, scratch) -> tuple:
  """(state dict, meta) of one checkpoint, read from a copy so the workdir is untouched.

  (Opening a CheckpointManager on the workdir itself would clean up its tmp directories.)
  """
  copy = os.path.join(str(scratch), f'read-{step}-{time.monotonic_ns()}')
  shutil.copytree(os.path.join(checkpoint_dir(workdir), str(step)),
                  os.path.join(copy, 'checkpoints', str(step)))
  checkpointer = checkpoint_lib.Checkpointer(copy, keep=100)
  try:
    return checkpointer.read(step)
  finally:
    checkpointer.close()
    shutil.rmtree(copy, ignore_errors=True)


def assert_run_equals(workdir, reference, step: int, scratch) -> None:
  """The run in `workdir` ended as the unbroken `reference`: its checkpoint at `step` is
  bitwise equal (params, batch_stats, opt_state, step, rng) and metrics.jsonl holds the same
  records."""
  state, _ = read_checkpoint(workdir, step, scratch)
  assert_states_equal(state, read_checkpoint(reference, step, scratch)[0])
  assert records(workdir) == records(reference)


def assert_records_close(workdir, reference, steps: list) -> None:
  """metrics.jsonl of `workdir` logs `steps`, each record with the fields and (to float
  tolerance) the values of `reference`'s: runs that differ in how their devices are spread
  over processes, not in what they compute."""
  found, expected = records(workdir), records(reference)
  assert [r['step'] for r in found] == steps
  for a, b in zip(found, expected, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)


def assert_states_equal(a: dict, b: dict) -> None:
  """Bitwise equality of two checkpoint state dicts (every array, same paths)."""
  flat_a, flat_b = checkpoint_lib.flatten(a), checkpoint_lib.flatten(b)
  assert sorted(flat_a) == sorted(flat_b)
  for path in flat_a:
    assert np.array_equal(flat_a[path], flat_b[path]), f'{path} differs'


def file_hashes(*roots) -> dict:
  """{path: sha256} of every file under the given files or directories."""
  hashes = {}
  for root in map(str, roots):
    if os.path.isfile(root):
      paths = [root]
    else:
      paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    for path in paths:
      with open(path, 'rb') as f:
        hashes[path] = hashlib.sha256(f.read()).hexdigest()
  return hashes
