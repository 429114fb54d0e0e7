"""Streamed images (dataset 'images') across processes: a run on prepared shards killed with
SIGKILL in the middle of an epoch and rerun ends bitwise equal to an unbroken run; two
processes with 2 devices each train like one process with 4, each reading its own part (the
examples the epoch's order puts at its devices' positions, augmented as their own
randomness says).

Runs experiments/train.py through _multiprocess_worker.py (TinyNet instead of the config's
ResNet-20; the tests are about data, processes and resume, not the network).
"""
import hashlib
import json
import os
import socket
import subprocess
import sys

import _image_data
import numpy as np
import pytest

import _fault_helpers as fh
from resnet_jax.data import augment, images, pipeline

pytestmark = pytest.mark.slow  # Subprocess runs of experiments/train.py.

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_multiprocess_worker.py')
NUM_TRAIN, NUM_VAL = 240, 30  # tiny_test's batch 16: 15 steps per epoch.


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  return _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), NUM_TRAIN, NUM_VAL)


def _flags(shards, *extra):
  return (f'--config={fh.TINY_CONFIG}', '--config.data.name=images',
          f'--config.data.data_dir={shards}', '--config.model.num_classes=3',
          '--config.data.augment.inception_crop=True', '--config.data.augment.flip=True', *extra)


def _command(record, workdir, shards, *extra):
  return [sys.executable, WORKER, str(record), f'--workdir={workdir}', *_flags(shards, *extra)]


def _start(command, log_path, devices=1):
  log = open(log_path, 'ab')
  process = subprocess.Popen(command, cwd=fh.REPO, stdout=log, stderr=subprocess.STDOUT,
                             env=fh.subprocess_env(devices))
  log.close()
  process.log_path = log_path
  return process


def test_sigkill_mid_epoch_then_rerun_ends_bitwise_equal(shards, tmp_path):
  reference, workdir = tmp_path / 'unbroken', tmp_path / 'killed'
  log = str(tmp_path / 'train.log')
  # One worker process decodes: the kill leaves it orphaned, and it must go too.
  extra = ('--config.speed.data_workers=1',)
  unbroken = _start(_command(tmp_path / 'r0.json', reference, shards), log)  # In-process.
  process = _start(_command(tmp_path / 'r1.json', workdir, shards, *extra), log)
  # Step 10: after the checkpoint at 8, in the middle of the first epoch (15 steps).
  fh.wait_until(lambda: any(s >= 10 for s in fh.metric_steps(workdir)), process)
  fh.kill_now(process)
  assert process.returncode == -9
  assert max(fh.committed_steps(workdir)) < 15
  rerun = _start(_command(tmp_path / 'r2.json', workdir, shards, *extra), log)
  assert fh.finish(rerun) == 0, fh.read_log(rerun)[-3000:]
  assert fh.finish(unbroken) == 0, fh.read_log(unbroken)[-3000:]

  fh.assert_run_equals(workdir, reference, fh.TINY_STEPS, tmp_path)
  steps = fh.metric_steps(workdir)
  assert steps == sorted(set(steps)) and steps[-1] == fh.TINY_STEPS


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_read_disjoint_parts_and_train_like_one_with_four_devices(
    shards, tmp_path):
  extra = ('--config.train.num_steps=8',)
  two, one = tmp_path / 'two', tmp_path / 'one'
  address = f'localhost:{_free_port()}'
  processes = [
      _start(_command(tmp_path / f'record{i}.json', two, shards, *extra,
                      f'--coordinator_address={address}', '--num_processes=2',
                      f'--process_id={i}'), str(tmp_path / f'p{i}.log'), devices=2)
      for i in range(2)]
  processes.append(_start(_command(tmp_path / 'single.json', one, shards, *extra),
                          str(tmp_path / 'single.log'), devices=4))
  for process in processes:
    assert fh.finish(process) == 0, fh.read_log(process)[-3000:]

  records = [json.load(open(tmp_path / f'record{i}.json')) for i in range(2)]
  single = json.load(open(tmp_path / 'single.json'))
  source = images.open_images(shards).train
  order = pipeline.epoch_order(0, 0, NUM_TRAIN)  # Seed 0, the first epoch (15 steps).
  for index, record in enumerate(records):
    assert record['process_index'] == index
    assert record['layouts'][0]['device_indices'] == [2 * index, 2 * index + 1]
    assert len(record['batches']) == 3
  assert len(single['batches']) == 3
  for step in range(3):
    for index, record in enumerate(records):  # Disjoint halves: process p has devices 2p, 2p+1,
      examples = order[16 * step + 8 * index + np.arange(8).reshape(2, 4)]
      batch = record['batches'][step]
      np.testing.assert_array_equal(batch['label'], [[source[i][0] for i in device]
                                                     for device in examples])
      assert batch['device_sha256'] == [_views_sha256(source, device) for device in examples]
    # ... holding the images the one process puts on its 4 devices.
    assert (records[0]['batches'][step]['device_sha256']
            + records[1]['batches'][step]['device_sha256']
            == single['batches'][step]['device_sha256'])
  fh.assert_records_close(two, one, [2, 4, 6, 8])


def _views_sha256(source, examples) -> str:
  """sha256 of the training views of `examples` in epoch 0 (seed 0): Inception's crop,
  resized on the host (crop_resize 'auto' on CPU), and the flip, each from the example's own
  randomness."""
  views = [augment.random_resized_crop(pipeline.decode(source, int(i))[1],
                                       pipeline.example_rng(0, 0, int(i)), 8, flip=True)
           for i in examples]
  return hashlib.sha256(np.stack(views).tobytes()).hexdigest()
