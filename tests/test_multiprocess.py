"""Two processes joined by jax.distributed (CPU, gloo collectives), 2 devices each, train
like one process with 4 devices; each reads its own slice of every batch (the examples the
epoch's order puts at its devices' positions); only process 0 writes metrics; their
collective checkpoint restores in a single process.

All three processes run experiments/train.py through _multiprocess_worker.py, which
records what each read and wrote and swaps in a small network (see its docstring).
"""
import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import _fault_helpers as fh
import helpers
from resnet_jax import data
from resnet_jax.data import pipeline
from resnet_jax.train import checkpoint as checkpoint_lib
from resnet_jax.train.loop import state_to_host_shapes
from resnet_jax.train.state import TrainState, abstract_train_state, state_from_host
from resnet_jax.train.workdir import load_saved_config

# Subprocess runs of experiments/train.py: outside the fast loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_multiprocess_worker.py')
STEPS = 8
FLAGS = (f'--config.train.num_steps={STEPS}',)
GLOBAL_BATCH = 16  # tiny_test.py


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _expected_examples(process: int, step: int, num_examples: int) -> np.ndarray:
  """The training examples process `process` (devices 2p, 2p + 1, 4 examples each) reads at
  `step` of epoch 0: those the epoch's order (seed 0) puts at its positions, [2, 4]."""
  order = pipeline.epoch_order(0, 0, num_examples)
  positions = 8 * process + np.arange(8).reshape(2, 4)
  return order[step * GLOBAL_BATCH + positions]


def test_two_processes_equal_one_process_with_four_devices(tmp_path):
  two, one = str(tmp_path / 'two_processes'), str(tmp_path / 'one_process')
  address = f'localhost:{_free_port()}'
  workers = []
  for index in range(2):
    command = [sys.executable, WORKER, str(tmp_path / f'record{index}.json'),
               f'--config={fh.TINY_CONFIG}', f'--workdir={two}', *FLAGS,
               f'--coordinator_address={address}', '--num_processes=2',
               f'--process_id={index}']
    workers.append(subprocess.Popen(command, cwd=fh.REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env=fh.subprocess_env(devices=2)))
  single = subprocess.Popen(
      [sys.executable, WORKER, str(tmp_path / 'record_single.json'), f'--config={fh.TINY_CONFIG}',
       f'--workdir={one}', *FLAGS], cwd=fh.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, env=fh.subprocess_env(devices=4))
  try:
    outputs = [p.communicate(timeout=300)[0] for p in workers + [single]]
  finally:
    for process in workers + [single]:
      if process.poll() is None:
        process.kill()
  for process, output in zip(workers + [single], outputs):
    assert process.returncode == 0, output[-3000:]

  # Each process read its own half of each global batch, and the right images.
  records = [json.load(open(tmp_path / f'record{i}.json')) for i in range(2)]
  split = data.load_dataset('fake_imagenet', image_size=8, seed=0).train
  for index, record in enumerate(records):
    assert record['process_index'] == index
    assert record['layouts'][0]['device_indices'] == [2 * index, 2 * index + 1]
    assert record['metric_writer_enabled'] == [index == 0]  # Only process 0 writes.
    assert len(record['batches']) == 3
    for step, batch in enumerate(record['batches']):
      examples = _expected_examples(index, step, len(split))
      # tiny_test stores 8x8 images and has no augmentation: each view is the image itself.
      np.testing.assert_array_equal(batch['label'], split.labels[examples])
      assert batch['device_sha256'] == [
          hashlib.sha256(split.images[device].tobytes()).hexdigest() for device in examples]
  # ... which is what the one process puts on its 4 devices.
  single_record = json.load(open(tmp_path / 'record_single.json'))
  assert single_record['layouts'][0]['device_indices'] == [0, 1, 2, 3]
  assert len(single_record['batches']) == 3
  for step, batch in enumerate(single_record['batches']):
    assert (records[0]['batches'][step]['device_sha256']
            + records[1]['batches'][step]['device_sha256'] == batch['device_sha256'])

  # The same training as one process with 4 devices, to float tolerance.
  two_records, one_records = fh.records(two), fh.records(one)
  assert [r['step'] for r in two_records] == [2, 4, 6, 8]  # Each step once: one writer.
  for a, b in zip(two_records, one_records, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert fh.committed_steps(two) == [4, 8]
  state, _ = fh.read_checkpoint(two, STEPS, tmp_path)
  reference, _ = fh.read_checkpoint(one, STEPS, tmp_path)
  flat, flat_reference = checkpoint_lib.flatten(state), checkpoint_lib.flatten(reference)
  assert sorted(flat) == sorted(flat_reference)
  for path in flat:
    np.testing.assert_allclose(flat[path], flat_reference[path], rtol=1e-5, atol=1e-5,
                               err_msg=path)

  # The collective checkpoint restores into a TrainState in this single 1-device process.
  config = load_saved_config(two)
  assert config.model.name == 'cifar_resnet20'
  model = helpers.TinyNet(num_classes=config.model.num_classes)  # As in _multiprocess_worker.py.
  tx, _ = helpers.create_optimizer(config, 512 // GLOBAL_BATCH)
  abstract = abstract_train_state(model, tx, (8, 8, 3), config.train.seed)
  checkpointer = checkpoint_lib.Checkpointer(two, keep=10)
  try:
    step, host, _ = checkpointer.restore_latest(state_to_host_shapes(abstract))
  finally:
    checkpointer.close()
  restored = state_from_host(abstract, host)
  assert isinstance(restored, TrainState) and step == STEPS and int(restored.step) == STEPS
  np.testing.assert_array_equal(restored.params['head']['kernel'],
                                flat['params/head/kernel'])
