"""Batches in reused shared memory (batch_ring): a slot comes back only when the last view of
its batch (a JAX array aliasing it included) is gone; batches made by Grain workers on
reused slots equal the ones made in-process; and no shared memory outlives a pipeline,
whether it ran to its end or failed."""
import gc
import os
import subprocess
import sys

import _image_data
import jax
import numpy as np
import pytest

import _fault_helpers as fh
from resnet_jax.data import augment, batch_ring, image_records, images, pipeline
from resnet_jax.data.layout import BatchLayout

SIZE = 8
SHAPE = (3, 5, 4, 3)


def _ring_and_reader():
  prefix = batch_ring.ring_prefix(batch_ring.new_prefix(), 0)
  return batch_ring.WorkerRing(SHAPE, prefix), batch_ring.SlotReader((prefix,))


def _exists(name: str) -> bool:
  from multiprocessing import shared_memory
  try:
    shared_memory.SharedMemory(name).close()
  except FileNotFoundError:
    return False
  return True


def test_a_slot_is_free_again_only_when_every_view_of_its_batch_is_gone():
  ring, reader = _ring_and_reader()
  first = ring.take()
  first.images[:] = 7
  images = reader.array(first.handle)
  np.testing.assert_array_equal(images, 7)  # The worker's pixels, shared.
  view = images.reshape((1,) + SHAPE)[0, 1:]
  on_device = jax.device_put(images.reshape((1,) + SHAPE))
  del images
  gc.collect()
  second = ring.take()
  assert second is not first  # The first is out (its views are alive): a new slot.
  ring.give_back(second)  # A batch never sent: free, and all of it to be cleared next time.
  assert ring.take() is second and second.written.tolist() == [[5, 4]] * 3
  del view
  gc.collect()
  assert ring.take() not in (first, second)  # The JAX array may alias the first: still out.
  np.testing.assert_array_equal(on_device, 7)
  del on_device
  gc.collect()
  assert ring.take() is first
  reader.close()


def test_the_reader_removes_the_slots_its_workers_made_and_never_sent():
  ring, reader = _ring_and_reader()
  sent, unsent = ring.take(), ring.take()
  names = [sent.handle.segment, unsent.handle.segment]
  assert all(map(_exists, names))
  sent.images[:] = 3
  images = reader.array(sent.handle)
  assert not _exists(sent.handle.segment)  # Unlinked once mapped; still readable.
  reader.close()
  assert not any(map(_exists, names))
  np.testing.assert_array_equal(images, 3)


def test_the_reader_removes_an_empty_slot_a_killed_worker_left():
  """A worker killed between making a slot and sizing it leaves an empty segment, which
  SharedMemory cannot open: closing the reader removes it, and the slots after it."""
  import _posixshmem
  from multiprocessing import shared_memory
  ring, reader = _ring_and_reader()
  first = ring.take()
  empty, later = f'{ring.prefix}1', f'{ring.prefix}2'
  os.close(_posixshmem.shm_open('/' + empty, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
  shared_memory.SharedMemory(later, create=True, size=64).close()
  reader.close()
  assert not any(map(_exists, [first.handle.segment, later]))
  assert not os.path.exists(f'/dev/shm/{empty}')


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  return _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), 48, 4)


@pytest.fixture(scope='module')
def broken_shards(tmp_path_factory):
  """The same pictures, but record 20 of the first train shard is not an image."""
  out = _image_data.make_shards(str(tmp_path_factory.mktemp('broken')), 48, 4)
  index = image_records.read_index(out)
  source = images.open_images(out).train
  records = [image_records.encode_record(*source[i])
             for i in range(index.splits['train'].records_per_shard[0])]
  records[20] = image_records.encode_record(0, b'not an image')
  image_records.write_shard(os.path.join(out, index.splits['train'].shards[0]), records)
  return out


@pytest.fixture(scope='module')
def source(shards):
  return images.open_images(shards).train


def _dataset(source, num_steps):
  layout = BatchLayout(8, (0, 1), 4)
  # Canvases: each image writes a box of its own size, and a reused slot must not show the
  # larger box of the batch before it.
  augmentation = augment.Augmentation(inception_crop=True, flip=True,
                                      canvas_size=augment.canvas_size(40, SIZE))
  return pipeline.train_dataset(source, layout, pipeline.Recipe(SIZE, augmentation, seed=5),
                                0, num_steps)


def test_worker_batches_on_reused_slots_equal_in_process_batches(source):
  steps = 48
  expected = list(pipeline.iterate(_dataset(source, steps), 2))
  assert len(expected) == steps
  addresses = set()
  seen = 0
  for step, batch in enumerate(pipeline.iterate(_dataset(source, steps), 2, workers=2)):
    seen += 1
    addresses.add(batch['image'].__array_interface__['data'][0])
    for key in expected[step]:
      np.testing.assert_array_equal(batch[key], expected[step][key], err_msg=f'{step} {key}')
    del batch  # Its slot goes back to its worker.
  assert seen == steps
  assert len(addresses) <= steps // 2  # Slots were reused (about 10 a worker).
  # A reader that keeps every batch: the workers make new slots rather than wait for one.
  kept = list(pipeline.iterate(_dataset(source, steps), 2, workers=2))
  assert len(kept) == steps
  for step, batch in enumerate(kept):
    for key in expected[step]:
      np.testing.assert_array_equal(batch[key], expected[step][key], err_msg=f'{step} {key}')


def test_a_process_whose_pipelines_ended_or_failed_exits_without_a_word(shards, broken_shards):
  # At exit, Python's resource tracker names every shared-memory block nobody unlinked
  # ("leaked shared_memory objects") on stderr: slots, batches and small arrays alike; a
  # failed batch stops the workers with slots and batches the reader never saw.
  program = f"""
import sys
sys.path.insert(0, {fh.REPO!r} + '/tests')
import test_batch_ring as t
from resnet_jax.data import images, pipeline
from resnet_jax.errors import DatasetError
for shards in ({shards!r}, {broken_shards!r}):
  source = images.open_images(shards).train
  try:
    for batch in pipeline.iterate(t._dataset(source, 20), 2, workers=2):
      pass
  except DatasetError as error:
    print(error)
"""
  result = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True,
                          env=fh.subprocess_env(), timeout=120)
  assert result.returncode == 0 and result.stderr == '', result.stderr
  assert 'not an image' in result.stdout  # The broken source did fail.
