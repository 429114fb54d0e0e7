"""The streaming input pipeline: Grain datasets over a StreamedSplit, decoded and augmented
on the host, batched to this process's share of each global batch.

Like the in-memory pipeline (pipeline.py), its position is the step: epoch e's order is
`epoch_order(seed, e, N)`, a pure function of (seed, epoch), and step s reads the slice
`s % steps_per_epoch` of epoch `s // steps_per_epoch` of it; each example's augmentation
draws from `example_rng(seed, epoch, index)`. A run resumed at step s builds the pipeline
from s and sees exactly the batches an unbroken run would; no iterator state is saved.

The training pipeline is a `grain.MapDataset` over the steps of the run: element i is step
start + i's batch, this process's share [local_devices * per_device], each of its examples
decoded and augmented straight into the batch's arrays (no per-example array, no stacking);
iterated, it is prefetched by `workers` worker processes (Grain's multiprocessing prefetch;
0: in this process), each making whole batches in shared-memory slots it reuses
(batch_ring). With `Augmentation.canvas_size`, the
Inception crop's resize is left to the train step (box_resize): the batch holds each
example's box on a canvas and its geometry ('box'). Each process reads only its own
positions of every global batch (`positions`: device d of the run takes positions
d * per_device ... + per_device - 1).

This module does not import JAX: Grain's worker processes import it.
"""
import dataclasses
import functools
import os
import threading
import time
from typing import Iterator, Optional

import numpy as np

from resnet_jax.data import batch_ring, direct_jpeg, host_augment
from resnet_jax.errors import BadImageError, DatasetError

# Batches each worker keeps ready, and batches buffered in the reading process: few, so
# that memory does not grow with the data or the run (see BENCHMARKS.md).
_WORKER_BUFFER = 2
_READ_BUFFER = 2
_MIN_SHARED_BYTES = 1 << 16
_PARENT_POLL_SECONDS = 0.5
# Set in Grain's worker processes (by _init_worker): the names of the worker's ring of
# shared-memory slots, where it makes its batches (batch_ring.ring_prefix).
_ring_prefix = ''


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The training augmentation: Inception's random-resized crop (`inception_crop`), else a
  resize to the image size with an optional pad-and-crop (`crop_padding` pixels); a random
  left-right flip after either when `flip`."""
  inception_crop: bool = False
  crop_padding: int = 0
  flip: bool = False
  # With inception_crop: 0 resizes each box on the host; else the side of the canvas that
  # carries it to the device, which resizes (host_augment.canvas_size, box_resize).
  canvas_size: int = 0

  def image_shape(self, image_size: int) -> tuple[int, int, int]:
    """The shape of the example images a training batch carries."""
    side = self.canvas_size if self.inception_crop and self.canvas_size else image_size
    return (side, side, 3)


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """This process's part of a global batch, without JAX (see pipeline.DeviceLayout).

  Attributes:
    global_batch: examples per step over all processes.
    device_indices: the global indices of this process's devices, in order.
    per_device: examples per device.
  """
  global_batch: int
  device_indices: tuple[int, ...]
  per_device: int

  @property
  def positions(self) -> np.ndarray:
    """int32 [local_devices, per_device]: this process's positions in a global batch."""
    devices = np.asarray(self.device_indices, np.int32)
    return devices[:, None] * self.per_device + np.arange(self.per_device, dtype=np.int32)

  @property
  def local_batch(self) -> int:
    return len(self.device_indices) * self.per_device


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of the training examples in `epoch`: a permutation of range(num_examples)."""
  return np.random.default_rng([seed, 0, epoch]).permutation(num_examples)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The augmentation randomness of example `index` in `epoch`."""
  return np.random.default_rng([seed, 1, epoch, index])


def decode(source, index: int, min_shorter_side: Optional[int] = None
           ) -> tuple[int, host_augment.RGBImage]:
  """(label, RGB image) of example `index` of `source`, decoded as prepare_images decodes
  (image_files.decode_rgb_image: EXIF orientation, any mode to RGB; a plain JPEG by
  libjpeg-turbo straight into an array, see direct_jpeg); DatasetError naming the example
  if it cannot be decoded.

  Args:
    min_shorter_side: a JPEG may be decoded at a reduced scale keeping at least this.
  """
  label, encoded = source[index]
  try:
    image = direct_jpeg.decode_rgb_fast(encoded, min_shorter_side=min_shorter_side)
  except BadImageError as error:
    raise DatasetError(f'{source.describe(index)}: {error.reason}; expected an image that '
                       'Pillow can decode') from error
  return label, image


class TrainExample:
  """Element k of a training pipeline starting at `start_step` -> one augmented example.

  Picklable (Grain sends it to its workers); the epoch's order is computed once per epoch
  in each process that uses it.
  """

  def __init__(self, source, layout: BatchLayout, steps_per_epoch: int, start_step: int,
               seed: int, image_size: int, augmentation: Augmentation):
    self.source, self.layout, self.steps_per_epoch = source, layout, steps_per_epoch
    self.start_step, self.seed, self.image_size = start_step, seed, image_size
    self.augmentation = augmentation
    self._positions = layout.positions.ravel()
    self._order = (None, None)

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_order'] = (None, None)  # Recomputed where needed; not shipped to each worker.
    return state

  def order(self, epoch: int) -> np.ndarray:
    if self._order[0] != epoch:
      self._order = (epoch, epoch_order(self.seed, epoch, len(self.source)))
    return self._order[1]

  def index_of(self, element: int) -> tuple[int, int, int]:
    """(epoch, example index, position in the global batch) of element `element`."""
    step, slot = divmod(int(element), self.layout.local_batch)
    epoch, in_epoch = divmod(self.start_step + step, self.steps_per_epoch)
    position = int(self._positions[slot])
    index = int(self.order(epoch)[in_epoch * self.layout.global_batch + position])
    return epoch, index, position

  def __call__(self, element: int) -> dict:
    """Element `element` as a dict of its own arrays (see `fill`)."""
    image = np.zeros(self.augmentation.image_shape(self.image_size), np.uint8)
    return {'image': image, **self.fill(element, image)}

  def fill(self, element: int, image: np.ndarray) -> dict:
    """Writes element `element`'s augmented image into `image` (zeros, of
    `augmentation.image_shape`) and returns its 'label', 'example_id' and, on a canvas, 'box'
    (its geometry, box_resize.BOX_FIELDS)."""
    epoch, index, position = self.index_of(element)
    label, decoded = decode(self.source, index)
    rng, how = example_rng(self.seed, epoch, index), self.augmentation
    fields = {'label': np.int32(label), 'example_id': np.int32(position)}
    if how.inception_crop and how.canvas_size:
      *geometry, heads = host_augment.crop_to_canvas(decoded, rng, self.image_size, image)
      # The device flips; without flips the coin is tossed all the same (see host_augment).
      fields['box'] = np.asarray(geometry + [heads if how.flip else 0], np.int32)
    elif how.inception_crop:
      image[...] = host_augment.random_resized_crop(decoded, rng, self.image_size, how.flip)
    else:
      image[...] = host_augment.resize_pad_crop(decoded, rng, self.image_size,
                                                how.crop_padding, how.flip)
    return fields


class TrainBatch:
  """Element i of a training pipeline -> this process's batch of step start_step + i, each
  example written into the batch's arrays as it is made. Picklable (Grain's workers).

  In a Grain worker the images are written into a slot of the worker's batch_ring, shared
  memory reused from batch to batch, which the reading process maps instead of a copy.
  """

  def __init__(self, example: TrainExample):
    self.example = example

  def __call__(self, step: int) -> dict:
    example = self.example
    local = example.layout.local_batch
    shape = (local,) + example.augmentation.image_shape(example.image_size)
    ring = batch_ring.worker_ring(shape, _ring_prefix) if _ring_prefix else None
    slot = ring.take() if ring else None
    images = slot.images if slot else np.zeros(shape, np.uint8)
    try:
      fields = [example.fill(int(step) * local + i, images[i]) for i in range(local)]
    except BaseException:
      if slot:
        ring.give_back(slot)
      raise
    batch = {k: np.stack([f[k] for f in fields]) for k in fields[0]}
    if slot and 'box' in batch:  # Canvases (other images are written whole).
      written = batch['box'][:, 4:6]  # The box's rows and cols (box_resize.BOX_FIELDS).
      _clear_beyond(images, slot.written, written)
      slot.written[:] = written
    return {'image': slot.handle if slot else images, **batch}


def _clear_beyond(images: np.ndarray, before: np.ndarray, now: np.ndarray) -> None:
  """Zeros what a reused slot's earlier batch wrote and this one did not: each image wrote
  the (rows, cols) at its top left in `before`, then in `now` (the rest of a canvas is
  zeros, as in fresh memory)."""
  for image, (rows_before, cols_before), (rows, cols) in zip(images, before, now):
    image[rows:rows_before, :cols_before] = 0
    image[:rows, cols:cols_before] = 0


class EvalExample:
  """Element k of an evaluation pipeline -> one centre-cropped example with its mask.

  The last global batch is padded with example 0, masked out (mask 0.0), so that every
  example counts once.
  """

  def __init__(self, source, layout: BatchLayout, image_size: int):
    self.source, self.layout, self.image_size = source, layout, image_size
    self._positions = layout.positions.ravel()

  def __call__(self, element: int) -> dict:
    batch, slot = divmod(int(element), self.layout.local_batch)
    position = batch * self.layout.global_batch + int(self._positions[slot])
    real = position < len(self.source)
    label, image = decode(self.source, position if real else 0,
                          min_shorter_side=host_augment.resize_target(self.image_size))
    return {'image': host_augment.center_crop(image, self.image_size),
            'label': np.int32(label), 'mask': np.float32(real)}


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  return -(-num_examples // global_batch)


def train_dataset(source, layout: BatchLayout, steps_per_epoch: int, seed: int,
                  image_size: int, augmentation: Augmentation, start_step: int,
                  num_steps: int):
  """A grain.MapDataset of `num_steps` batches from `start_step`: element i is step
  start_step + i's local batch {'image' [local_batch, H, W, 3] uint8, 'label', 'example_id'}
  (and 'box' [local_batch, 7] int32 when the images are canvases; see Augmentation)."""
  import grain
  example = TrainExample(source, layout, steps_per_epoch, start_step, seed, image_size,
                         augmentation)
  return grain.MapDataset.range(num_steps).map(TrainBatch(example))


def eval_dataset(source, layout: BatchLayout, image_size: int):
  """A grain.MapDataset of the evaluation batches {'image', 'label', 'mask'}, in order."""
  import grain
  batches = num_eval_batches(len(source), layout.global_batch)
  return (grain.MapDataset.range(batches * layout.local_batch)
          .map(EvalExample(source, layout, image_size)).batch(layout.local_batch))


def iterate(dataset, local_devices: int, workers: int = 0,
            threads: Optional[int] = None) -> Iterator[dict]:
  """Iterates a batched dataset, decoding in `workers` processes (0: in this one), and
  yields each batch reshaped to [local_devices, per_device, ...]. Closing the generator
  stops the workers.

  Args:
    threads: reading threads per process (default: 1 with workers, 2 without).
  """
  import grain
  if threads is None:
    threads = 1 if workers else 2
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=_READ_BUFFER)
  stream, prefix = dataset.to_iter_dataset(options), batch_ring.new_prefix()
  if workers:
    # Labels, boxes and masks travel pickled: a shared-memory block each costs more.
    stream = grain.experimental.WithOptionsIterDataset(
        stream, grain.experimental.DatasetOptions(min_shm_size=_MIN_SHARED_BYTES))
    _allow_worker_flags()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=_WORKER_BUFFER),
        worker_init_fn=functools.partial(_init_worker, prefix))
  slots = batch_ring.SlotReader(tuple(batch_ring.ring_prefix(prefix, w) for w in range(workers)))
  iterator = iter(stream)
  try:
    for batch in iterator:
      if isinstance(batch.get('image'), batch_ring.SlotHandle):
        batch['image'] = slots.array(batch['image'])
      yield {k: v.reshape((local_devices, -1) + v.shape[1:]) for k, v in batch.items()}
  finally:
    iterator.close()
    slots.close()


def _init_worker(prefix: str, worker_index: int, worker_count: int) -> None:
  """Run in each worker: batches in shared memory, in a ring named after the reading
  process's `prefix` (see TrainBatch), and an exit when the process that started it is gone
  (a run killed with SIGKILL cannot stop its workers, which would otherwise live on as
  orphans)."""
  del worker_count
  global _ring_prefix
  _ring_prefix = batch_ring.ring_prefix(prefix, worker_index)
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)

  threading.Thread(target=watch, daemon=True, name='exit-with-parent').start()


def _allow_worker_flags() -> None:
  """Grain's workers read absl flags; outside an absl app (tests, notebooks), mark them
  parsed so that their defaults are used."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
