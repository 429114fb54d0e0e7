"""Batches in reused shared memory (batch_ring): a slot comes back only when the last view of
its batch (a JAX array aliasing it included) is gone, and batches made by Grain workers on
reused slots, or in fresh memory when every slot is out, equal the ones made in-process."""
import gc
import subprocess
import sys

import _image_data
import jax
import numpy as np
import pytest

import _fault_helpers as fh
from resnet_jax.data import batch_ring, grain_pipeline, host_augment, streamed

SIZE = 8
SHAPE = (3, 5, 4, 3)


def test_a_slot_is_free_again_only_when_every_view_of_its_batch_is_gone():
  ring, reader = batch_ring.WorkerRing(SHAPE, capacity=2), batch_ring.SlotReader()
  first = ring.take()
  first.images[:] = 7
  images = reader.array(first.handle)
  np.testing.assert_array_equal(images, 7)  # The worker's pixels, shared.
  view = images.reshape((1,) + SHAPE)[0, 1:]
  on_device = jax.device_put(images.reshape((1,) + SHAPE))
  del images
  gc.collect()
  second = ring.take()
  assert second.handle.slot == 1 and ring.take() is None  # Both out: the caller makes its own.
  del view
  gc.collect()
  assert ring.take() is None  # The JAX array may alias the slot: still out.
  np.testing.assert_array_equal(on_device, 7)
  del on_device
  gc.collect()
  again = ring.take()
  assert again is first and again.handle.slot == 0
  ring.give_back(second)  # A batch never sent: free, and all of it to be cleared next time.
  assert ring.take() is second and second.written.tolist() == [[5, 4]] * 3
  reader.close()


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  return _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), 48, 4)


@pytest.fixture(scope='module')
def source(shards):
  return streamed.open_images(shards, SIZE).train.source


def _dataset(source, num_steps):
  layout = grain_pipeline.BatchLayout(8, (0, 1), 4)
  # Canvases: each image writes a box of its own size, and a reused slot must not show the
  # larger box of the batch before it.
  augmentation = grain_pipeline.Augmentation(inception_crop=True, flip=True,
                                             canvas_size=host_augment.canvas_size(40, SIZE))
  return grain_pipeline.train_dataset(source, layout, 6, 5, SIZE, augmentation, 0, num_steps)


def _in_fresh_memory(batch) -> bool:
  """Whether a batch came in fresh shared memory (Grain's SharedMemoryArray), not a slot."""
  from grain.python import SharedMemoryArray
  return isinstance(batch['image'], SharedMemoryArray)


def test_worker_batches_on_reused_slots_and_on_fresh_memory_equal_in_process_batches(source):
  steps = 3 * 2 * grain_pipeline._RING_SLOTS  # Each of 2 workers reuses each slot.
  expected = list(grain_pipeline.iterate(_dataset(source, steps), 2))
  on_slots = 0
  for step, batch in enumerate(grain_pipeline.iterate(_dataset(source, steps), 2, workers=2)):
    on_slots += not _in_fresh_memory(batch)
    for key in expected[step]:
      np.testing.assert_array_equal(batch[key], expected[step][key], err_msg=f'{step} {key}')
    del batch  # Its slot goes back to its worker.
  assert on_slots > 2 * 2 * grain_pipeline._RING_SLOTS  # Slots were reused, twice over.
  # A reader that keeps every batch: the slots run out, and the workers carry on in fresh
  # shared memory instead of waiting for one.
  kept = list(grain_pipeline.iterate(_dataset(source, steps), 2, workers=2))
  assert len(kept) == steps
  assert sum(map(_in_fresh_memory, kept)) >= steps - 2 * grain_pipeline._RING_SLOTS
  for step, batch in enumerate(kept):
    for key in expected[step]:
      np.testing.assert_array_equal(batch[key], expected[step][key], err_msg=f'{step} {key}')


def test_a_process_that_read_a_pipeline_to_its_end_exits_without_a_word(shards):
  # At exit, Python's resource tracker names every shared-memory block nobody unlinked
  # ("leaked shared_memory objects") on stderr: slots and batches, small arrays included.
  program = f"""
import sys
sys.path.insert(0, {fh.REPO!r} + '/tests')
import test_batch_ring as t
from resnet_jax.data import grain_pipeline, streamed
source = streamed.open_images({shards!r}, t.SIZE).train.source
batches = grain_pipeline.iterate(t._dataset(source, 20), 2, workers=2)
for batch in batches:
  pass
"""
  result = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True,
                          env=fh.subprocess_env(), timeout=120)
  assert result.returncode == 0 and result.stderr == '', result.stderr
