"""Training batches made in reused shared memory: a Grain worker writes each batch's images
into one of a few shared-memory slots it keeps, and the reading process gives the slot back
when the last view of that batch is gone.

Why: fresh shared memory for every batch (Grain's SharedMemoryArray) is faulted in page by
page as the worker writes it and freed after it is read: 48 page faults an image on a
347x347 canvas, 0.19 ms of CPU on top of the 0.70 ms the image's other work takes
(BENCHMARKS.md). A slot's pages are faulted in once.

How: a worker's `WorkerRing` keeps up to `capacity` slots, each a shared-memory segment of
one batch's images, and one shared byte per slot, 1 while the slot's batch is out and 0
when it is free. `take` gives a free slot, or None when every slot is out (the caller then
makes the batch in fresh shared memory, so a reader that holds on to many batches never
waits); the batch carries the slot's `SlotHandle` in place of its images. In the reading
process `SlotReader.array` maps the slot (once per segment, unlinking the name as soon as it
is mapped) and returns an array whose collection frees the slot: numpy views, and JAX
arrays that alias host memory, keep the array they view alive.

A reused slot still holds the pixels of the batch before; `Slot.written` records what each
image wrote, so that the caller can clear what the new batch leaves (see grain_pipeline).

This module does not import JAX: Grain's worker processes import it.
"""
import dataclasses
import threading
import weakref
from multiprocessing import shared_memory
from typing import Optional

import numpy as np

_FREE, _OUT = 0, 1


@dataclasses.dataclass(frozen=True)
class SlotHandle:
  """What a batch carries in place of its images: where they are and which slot to free."""
  segment: str
  flags: str
  slot: int
  shape: tuple[int, ...]


@dataclasses.dataclass
class Slot:
  """A slot taken by the worker: `images` to write, `written` [images, 2] the (rows, cols)
  each image wrote at its top left last time (zeros for a new slot), and its handle."""
  images: np.ndarray
  written: np.ndarray
  handle: SlotHandle


class WorkerRing:
  """The slots of one batch shape in one worker process."""

  def __init__(self, shape: tuple[int, ...], capacity: int):
    self.shape, self.capacity = tuple(shape), capacity
    self._flags_memory = shared_memory.SharedMemory(create=True, size=capacity)
    self._flags = np.ndarray((capacity,), np.uint8, buffer=self._flags_memory.buf)
    self._flags[:] = _FREE
    self._segments: list[shared_memory.SharedMemory] = []
    self._slots: list[Slot] = []
    self._lock = threading.Lock()

  def take(self) -> Optional[Slot]:
    """A free slot, marked out; a new one while fewer than `capacity` exist; else None."""
    with self._lock:
      for index, slot in enumerate(self._slots):
        if self._flags[index] == _FREE:
          self._flags[index] = _OUT
          return slot
      if len(self._slots) == self.capacity:
        return None
      segment = shared_memory.SharedMemory(create=True, size=int(np.prod(self.shape)))
      index = len(self._slots)
      slot = Slot(np.ndarray(self.shape, np.uint8, buffer=segment.buf),
                  np.zeros((self.shape[0], 2), np.int64),
                  SlotHandle(segment.name, self._flags_memory.name, index, self.shape))
      self._segments.append(segment)
      self._slots.append(slot)
      self._flags[index] = _OUT
      return slot

  def give_back(self, slot: Slot) -> None:
    """Frees a slot whose batch was never sent (its making failed); whatever it wrote is to
    be cleared at the next use."""
    slot.written[:] = self.shape[1:3]
    self._flags[slot.handle.slot] = _FREE


_rings: dict[tuple[int, ...], WorkerRing] = {}


def worker_ring(shape: tuple[int, ...], capacity: int) -> WorkerRing:
  """This process's ring for batches of `shape` (made on first use)."""
  if tuple(shape) not in _rings:
    _rings[tuple(shape)] = WorkerRing(shape, capacity)
  return _rings[tuple(shape)]


class SlotReader:
  """The reading process's side: maps slots and frees each when its array is collected."""

  def __init__(self):
    self._mapped: dict[str, shared_memory.SharedMemory] = {}

  def array(self, handle: SlotHandle) -> np.ndarray:
    """The images of `handle`'s slot, shared with the worker (not copied)."""
    segment, flags = self._map(handle.segment), self._map(handle.flags)
    images = np.ndarray(handle.shape, np.uint8, buffer=segment.buf)
    flag = np.ndarray((flags.size,), np.uint8, buffer=flags.buf)
    # The finalizer holds both mappings: neither is closed while a slot's array is alive.
    weakref.finalize(images, _free, flag, handle.slot, segment, flags)
    return images

  def _map(self, name: str) -> shared_memory.SharedMemory:
    if name not in self._mapped:
      memory = shared_memory.SharedMemory(name)
      memory.unlink()  # Mapped on both sides now: nothing is left behind however they end.
      self._mapped[name] = memory
    return self._mapped[name]

  def close(self) -> None:
    """Forgets the mappings; each is closed when the last array in it is collected."""
    self._mapped.clear()


def _free(flag: np.ndarray, slot: int, *mappings) -> None:
  del mappings
  flag[slot] = _FREE
