"""Training batches made in reused shared memory: a Grain worker writes each batch's images
into a shared-memory slot it keeps, and the reading process gives the slot back when the
last view of that batch is gone.

Why: fresh shared memory for every batch (Grain's SharedMemoryArray) is faulted in page by
page as the worker writes it, each page zeroed by the kernel, and freed after it is read:
on every batch, a cost per image that the decoding itself does not have (BENCHMARKS.md,
"Streaming input", change (5)). A slot's pages are faulted in once.

How: a worker's `WorkerRing` holds slots, each a shared-memory segment of one page of header
and one batch's images; the header's first byte is 1 while the slot's batch is out and 0
when it is free. `take` gives a free slot, or a new one when every slot is out (as many as
the batches a worker has out at once: Grain's buffers on both sides and what the reader
holds); the batch carries the slot's `SlotHandle` in place of its
images. In the reading process `SlotReader.array` maps the slot (once per segment,
unlinking the name as soon as it is mapped) and returns an array whose collection frees the
slot: numpy views, and JAX arrays that alias host memory, keep the array they view alive.

The reading process names the rings (`ring_prefix`: its own random prefix and the worker's
index; slot k's segment is the prefix and k, made in order), so that, once the workers have
stopped, `SlotReader.close` removes every slot a worker made and no batch brought over (a
failed batch, a run stopped early) and nothing is left for Python's resource tracker to
report.

A reused slot still holds the pixels of the batch before; `Slot.written` records what each
image wrote, so that the caller can clear what the new batch leaves (see pipeline.TrainBatch).

This module does not import JAX: Grain's worker processes import it.
"""
import dataclasses
import itertools
import mmap
import secrets
import threading
import weakref
from multiprocessing import shared_memory

import numpy as np

_FREE, _OUT = 0, 1
_HEADER = mmap.PAGESIZE  # The images start on a page: JAX on the CPU may alias them.


def new_prefix() -> str:
  """A prefix for the rings of one reader's workers, unlike any other reader's."""
  return f'rj{secrets.token_hex(4)}'


def ring_prefix(prefix: str, worker_index: int) -> str:
  """The names of worker `worker_index`'s slots begin with this."""
  return f'{prefix}_{worker_index}_'


@dataclasses.dataclass(frozen=True)
class SlotHandle:
  """What a batch carries in place of its images: the slot's segment and the images' shape."""
  segment: str
  shape: tuple[int, ...]


@dataclasses.dataclass(eq=False)  # Slots are compared by identity.
class Slot:
  """A slot taken by the worker: `images` to write, `written` [images, 2] the (rows, cols)
  each image wrote at its top left last time (zeros for a new slot), and its handle."""
  images: np.ndarray
  written: np.ndarray
  handle: SlotHandle
  state: np.ndarray  # The header's first byte, shared with the reader.
  memory: shared_memory.SharedMemory  # Kept: closing it would unmap `images`.


class WorkerRing:
  """The slots of one worker, for batches of one shape."""

  def __init__(self, shape: tuple[int, ...], prefix: str):
    self.shape, self.prefix = tuple(shape), prefix
    self._slots: list[Slot] = []
    self._lock = threading.Lock()

  def take(self) -> Slot:
    """A free slot, or a new one; marked out."""
    with self._lock:
      free = [slot for slot in self._slots if slot.state[0] == _FREE]
      slot = free[0] if free else self._new_slot()
      slot.state[0] = _OUT
      return slot

  def _new_slot(self) -> Slot:
    name = f'{self.prefix}{len(self._slots)}'
    segment = shared_memory.SharedMemory(name, create=True,
                                         size=_HEADER + int(np.prod(self.shape)))
    self._slots.append(Slot(_images(segment, self.shape), np.zeros((self.shape[0], 2), np.int64),
                            SlotHandle(name, self.shape), _state(segment), segment))
    return self._slots[-1]

  def give_back(self, slot: Slot) -> None:
    """Frees a slot whose batch was never sent (its making failed); whatever it wrote is to
    be cleared at the next use."""
    slot.written[:] = self.shape[1:3]
    slot.state[0] = _FREE


_ring = None


def worker_ring(shape: tuple[int, ...], prefix: str) -> WorkerRing:
  """This process's ring (made on first use): one per worker, its batches all of `shape`."""
  global _ring
  if _ring is None:
    _ring = WorkerRing(shape, prefix)
  if (_ring.shape, _ring.prefix) != (tuple(shape), prefix):
    raise ValueError(f'this process has a ring for batches {_ring.shape} named {_ring.prefix}*; '
                     f'expected one ring a worker, not another for {tuple(shape)} {prefix}*')
  return _ring


class SlotReader:
  """The reading process's side: maps slots and frees each when its array is collected.

  Args:
    prefixes: the `ring_prefix` of each worker that may send slots.
  """

  def __init__(self, prefixes: tuple[str, ...] = ()):
    self.prefixes = prefixes
    self._mapped: dict[str, shared_memory.SharedMemory] = {}

  def array(self, handle: SlotHandle) -> np.ndarray:
    """The images of `handle`'s slot, shared with the worker (not copied)."""
    if handle.segment not in self._mapped:
      segment = shared_memory.SharedMemory(handle.segment)
      segment.unlink()  # Mapped on both sides now: nothing is left behind however they end.
      self._mapped[handle.segment] = segment
    segment = self._mapped[handle.segment]
    images = _images(segment, handle.shape)
    # The finalizer holds the mapping: it is not closed while the slot's array is alive.
    weakref.finalize(images, _free, _state(segment), segment)
    return images

  def close(self) -> None:
    """Removes the slots no batch brought here (call it once the workers have stopped) and
    forgets the mappings; each is closed when the last array in it is collected."""
    for prefix in self.prefixes:
      for name in (f'{prefix}{k}' for k in itertools.count()):
        if name in self._mapped:
          continue
        try:
          segment = shared_memory.SharedMemory(name)
        except FileNotFoundError:
          break  # Slots are made in order: none after this one.
        except ValueError:  # Empty: its worker was killed between making and sizing it.
          _unlink_empty(name)
          continue
        segment.close()
        segment.unlink()
    self._mapped.clear()


def _unlink_empty(name: str) -> None:
  """Removes an empty slot, which SharedMemory cannot open (it cannot map 0 bytes)."""
  try:
    import _posixshmem  # What SharedMemory.unlink calls on POSIX.
    _posixshmem.shm_unlink('/' + name)
  except (ImportError, OSError):
    pass


def _images(segment: shared_memory.SharedMemory, shape: tuple[int, ...]) -> np.ndarray:
  return np.ndarray(shape, np.uint8, buffer=segment.buf, offset=_HEADER)


def _state(segment: shared_memory.SharedMemory) -> np.ndarray:
  return np.ndarray((1,), np.uint8, buffer=segment.buf)


def _free(state: np.ndarray, segment: shared_memory.SharedMemory) -> None:
  del segment
  state[0] = _FREE
