"""The one input pipeline: any source -> this process's numpy batch for step s.

Every dataset (SIGNS, synthetic SIGNS, digits, CIFAR-10, prepared shards, an image folder,
arrays a test hands over) is a source of (label, image) records (resnet_jax.data.types),
and every run reads it through the Grain datasets made here:
- order: epoch e visits the training examples in `epoch_order(seed, e, N)`, a pure function
  of (seed, epoch); step s reads the slice `s % steps_per_epoch` of epoch
  `s // steps_per_epoch` of it (the last partial batch of an epoch is dropped);
- augmentation: example i of epoch e draws from `example_rng(seed, e, i)` alone, so it is
  augmented the same however the batch is split or the run is resumed (resnet_jax.data.augment
  holds the recipes and their evaluation views);
- layout: this process reads only its own positions of each global batch
  (resnet_jax.data.layout).
So the pipeline's position is the step: a run resumed at step s builds the pipeline from s
and sees exactly the batches an unbroken run would; no iterator state is saved.

`train_dataset` is a `grain.MapDataset` over the steps of the run: element i is step
start + i's batch, each example decoded and augmented straight into the batch's arrays.
`iterate` runs a dataset in `workers` worker processes (Grain's multiprocessing prefetch;
0: in this process), each making whole batches in shared-memory slots it reuses
(batch_ring), and yields numpy batches shaped [local_devices, per_device, ...], which the
training side (resnet_jax.train.feed) puts on the devices. The workers ignore SIGINT and
SIGTERM (the reading process decides when to stop, and stops them), and a worker that dies
(killed: the out-of-memory killer) is a DataWorkerError naming it, while an error a worker
raises (a damaged shard's DatasetError) reaches the reader as itself. `eval_dataset` gives every
evaluation example once, in order, the last batch padded and masked; `statistics_dataset`
gives the unaugmented batches BatchNorm statistics are re-estimated from.

Numpy only, no JAX: Grain's worker processes import this module.
"""
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import re
import signal
import threading
import time
from typing import Iterator, Optional

import numpy as np

from resnet_jax.data import batch_ring, direct_jpeg
from resnet_jax.data.augment import Augmentation
from resnet_jax.data.layout import BatchLayout, num_eval_batches, steps_per_epoch
from resnet_jax.errors import BadImageError, DatasetError, DataWorkerError

# Independent random streams of one seed: the training order, each example's augmentation,
# the order of the BatchNorm statistics' batches.
TRAIN_ORDER, AUGMENTATION, STATISTICS_ORDER = 0, 1, 2
# Batches each worker keeps ready, and batches buffered in the reading process: few, so
# that memory does not grow with the data or the run.
_WORKER_BUFFER = 2
_READ_BUFFER = 2
_MIN_SHARED_BYTES = 1 << 16
_PARENT_POLL_SECONDS = 0.5
# The signals that stop a run: the reading process handles them; its workers ignore them.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Grain's words for a worker process that ended without a word (killed, crashed), its
# name for the processes it starts, and the exit code of a process the kernel's
# out-of-memory killer ends.
_WORKER_DIED = re.compile(r'Worker process was terminated unexpectedly with exit code (-?\d+)')
_WORKER_NAME = 'grain-process-prefetch'
_OOM_KILL = -signal.SIGKILL
# Set in Grain's worker processes (by _init_worker): the names of the worker's ring of
# shared-memory slots, where it makes its batches (batch_ring.ring_prefix).
_ring_prefix = ''


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How records become a batch's images: their side, the training augmentation, the seed
  of the order and of the augmentation."""
  image_size: int
  augmentation: Augmentation = Augmentation()
  seed: int = 0


def epoch_order(seed: int, epoch: int, num_examples: int, stream: int = TRAIN_ORDER
                ) -> np.ndarray:
  """The order of the training examples in `epoch`: a permutation of range(num_examples)."""
  return np.random.default_rng([seed, stream, epoch]).permutation(num_examples)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The augmentation randomness of example `index` in `epoch`."""
  return np.random.default_rng([seed, AUGMENTATION, epoch, index])


def decode(source, index: int, min_shorter_side: Optional[int] = None):
  """(label, image) of record `index` of `source`: an array record as it is, an encoded one
  decoded as prepare_images decodes (EXIF orientation, any mode to RGB; a plain JPEG by
  libjpeg-turbo straight into an array, see direct_jpeg); DatasetError naming the record if
  it cannot be decoded.

  Args:
    min_shorter_side: a JPEG may be decoded at a reduced scale keeping at least this.
  """
  label, image = source[index]
  if isinstance(image, np.ndarray):
    return label, image
  try:
    return label, direct_jpeg.decode_rgb_fast(image, min_shorter_side=min_shorter_side)
  except BadImageError as error:
    raise DatasetError(f'{source.describe(index)}: {error.reason}; expected an image that '
                       'Pillow can decode') from error


class TrainExample:
  """Element k of a training pipeline starting at `start_step` -> one example's image and
  fields. Picklable (Grain sends it to its workers); the epoch's order is computed once per
  epoch in each process that uses it.

  Args:
    augment: False gives each example's evaluation view (the statistics batches).
    stream: which order (TRAIN_ORDER, STATISTICS_ORDER).
  """

  def __init__(self, source, layout: BatchLayout, recipe: Recipe, start_step: int,
               augment: bool = True, stream: int = TRAIN_ORDER):
    self.source, self.layout, self.recipe, self.start_step = source, layout, recipe, start_step
    self.augment, self.stream = augment, stream
    self.steps_per_epoch = steps_per_epoch(len(source), layout.global_batch)
    self._positions = layout.positions.ravel()
    self._order = (None, None)

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_order'] = (None, None)  # Recomputed where needed; not shipped to each worker.
    return state

  @property
  def image_shape(self) -> tuple[int, int, int]:
    size = self.recipe.image_size
    return self.recipe.augmentation.image_shape(size) if self.augment else (size, size, 3)

  def order(self, epoch: int) -> np.ndarray:
    if self._order[0] != epoch:
      self._order = (epoch, epoch_order(self.recipe.seed, epoch, len(self.source), self.stream))
    return self._order[1]

  def index_of(self, element: int) -> tuple[int, int]:
    """(epoch, example index) of element `element`."""
    step, slot = divmod(int(element), self.layout.local_batch)
    epoch, in_epoch = divmod(self.start_step + step, self.steps_per_epoch)
    position = int(self._positions[slot])
    return epoch, int(self.order(epoch)[in_epoch * self.layout.global_batch + position])

  def fill(self, element: int, image: np.ndarray) -> dict:
    """Writes element `element`'s image into `image` (zeros, of `image_shape`) and returns
    its 'label' and, on a canvas, its 'box' (box_resize's BOX_FIELDS)."""
    epoch, index = self.index_of(element)
    label, decoded = decode(self.source, index)
    recipe = self.recipe
    fields = {'label': np.int32(label)}
    if not self.augment:
      image[...] = recipe.augmentation.eval_view(decoded, recipe.image_size)
      return fields
    box = recipe.augmentation.train_view(decoded, example_rng(recipe.seed, epoch, index),
                                         recipe.image_size, image)
    if box:
      fields['box'] = np.asarray(box, np.int32)
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
    shape = (local,) + example.image_shape
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
  """Element k of an evaluation pipeline -> one example's evaluation view with its mask.

  The last global batch is padded with example 0, masked out (mask 0.0), so that every
  example counts once.
  """

  def __init__(self, source, layout: BatchLayout, recipe: Recipe):
    self.source, self.layout, self.recipe = source, layout, recipe
    self._positions = layout.positions.ravel()

  def __call__(self, element: int) -> dict:
    batch, slot = divmod(int(element), self.layout.local_batch)
    position = batch * self.layout.global_batch + int(self._positions[slot])
    real = position < len(self.source)
    how, size = self.recipe.augmentation, self.recipe.image_size
    label, image = decode(self.source, position if real else 0,
                          min_shorter_side=how.eval_decode_side(size))
    return {'image': how.eval_view(image, size), 'label': np.int32(label),
            'mask': np.float32(real)}


def train_dataset(source, layout: BatchLayout, recipe: Recipe, start_step: int,
                  num_steps: int):
  """A grain.MapDataset of `num_steps` batches from `start_step`: element i is step
  start_step + i's local batch {'image' [local_batch, H, W, 3] uint8, 'label' int32
  [local_batch]} (and 'box' [local_batch, 7] int32 when the images are canvases)."""
  import grain
  example = TrainExample(source, layout, recipe, start_step)
  return grain.MapDataset.range(num_steps).map(TrainBatch(example))


def statistics_dataset(source, layout: BatchLayout, recipe: Recipe, num_batches: int):
  """The `num_batches` unaugmented training batches BatchNorm statistics are re-estimated
  from: an order of their own (not epoch 0's), each example's evaluation view; the same
  batches every time."""
  import grain
  example = TrainExample(source, layout, recipe, 0, augment=False, stream=STATISTICS_ORDER)
  return grain.MapDataset.range(num_batches).map(TrainBatch(example))


def eval_dataset(source, layout: BatchLayout, recipe: Recipe):
  """A grain.MapDataset of the evaluation batches {'image', 'label', 'mask'}, in order."""
  import grain
  batches = num_eval_batches(len(source), layout.global_batch)
  return (grain.MapDataset.range(batches * layout.local_batch)
          .map(EvalExample(source, layout, recipe)).batch(layout.local_batch))


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
  watch = _WorkerWatch(workers)
  iterator = None
  try:
    # Workers start with the stop signals blocked (threads and processes inherit the mask),
    # so that none is interrupted before _init_worker makes it ignore them: a worker that
    # dies while it starts leaves the thread sending it its task blocked for good.
    with _stop_signals_blocked(workers > 0):
      iterator = iter(stream)
      batch = watch.next(iterator)
    while batch is not None:
      if isinstance(batch.get('image'), batch_ring.SlotHandle):
        batch['image'] = slots.array(batch['image'])
      yield {k: v.reshape((local_devices, -1) + v.shape[1:]) for k, v in batch.items()}
      batch = watch.next(iterator)
  finally:
    if iterator is not None:
      iterator.close()
    slots.close()


class _WorkerWatch:
  """Pulls batches from a pipeline's iterator and tells a dead worker from a failing one.

  Grain re-raises what a worker raised (a DatasetError stays a DatasetError) and reports a
  worker that ended without a word with a RuntimeError giving its exit code: that becomes a
  DataWorkerError naming the process (its pid, found among this process's children while
  the workers run) and how it ended.
  """

  def __init__(self, workers: int):
    self.workers = workers
    self.before = set(multiprocessing.active_children()) if workers else set()
    self.processes = set()

  def next(self, iterator) -> Optional[dict]:
    """The next batch, or None at the end."""
    try:
      batch = next(iterator, None)
    except RuntimeError as error:
      died = _WORKER_DIED.search(str(error))
      if died is None:
        raise
      raise DataWorkerError(self._describe(int(died.group(1)))) from error
    if len(self.processes) < self.workers:
      self.processes.update(p for p in multiprocessing.active_children()
                            if p not in self.before and p.name.startswith(_WORKER_NAME))
    return batch

  def _describe(self, exit_code: int) -> str:
    pids = sorted(p.pid for p in self.processes if p.exitcode == exit_code)
    which = f' (pid {pids[0]})' if len(pids) == 1 else ''
    if exit_code < 0:
      number = -exit_code
      how = f'killed by signal {number} ({signal.Signals(number).name}'
      how += '): out of memory?' if exit_code == _OOM_KILL else ')'
    else:
      how = f'exited with code {exit_code}'
    return f'a data worker process{which} died ({how})'


@contextlib.contextmanager
def _stop_signals_blocked(block: bool):
  """Blocks SIGINT and SIGTERM in this thread inside the block (a signal that arrives
  meanwhile waits, or goes to another thread of this process: nothing is lost).

  Python's resource tracker is started first: the thread that starts it unblocks both
  signals afterwards, and would pass that on to the workers it starts.
  """
  if not block or not hasattr(signal, 'pthread_sigmask'):
    yield
    return
  from multiprocessing import resource_tracker
  resource_tracker.ensure_running()
  previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(prefix: str, worker_index: int, worker_count: int) -> None:
  """Run in each worker: SIGINT and SIGTERM ignored (Ctrl-C reaches the whole process group;
  the reading process stops, then stops its workers, and a worker interrupted on its own
  would print a KeyboardInterrupt traceback), batches in shared memory, in a ring named after
  the reading process's `prefix` (see TrainBatch), and an exit when the process that started
  it is gone (a run killed with SIGKILL cannot stop its workers, which would otherwise live
  on as orphans)."""
  del worker_count
  for number in _STOP_SIGNALS:
    signal.signal(number, signal.SIG_IGN)  # Also drops one that came while blocked.
  if hasattr(signal, 'pthread_sigmask'):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
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
