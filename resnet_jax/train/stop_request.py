"""StopRequest: SIGTERM/SIGINT as a flag that the training loop checks, never an exception.

Python runs a signal handler between bytecodes of the main thread; a handler that only sets
a flag lets XLA's compilation, a checkpoint save or a step finish, and the loop (or its
start-up, between phases) decides where to stop. All processes of a multi-process run stop
at the same point: the questions that count are asked by every process together.
"""
import signal
import threading
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopRequest:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each dispatch."""

  def __init__(self):
    self.signal_number: Optional[int] = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in (signal.SIGTERM, signal.SIGINT):
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def _handle(self, number, _frame):
    self.signal_number = number

  def __exit__(self, *exc):
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def describe(self) -> str:
    if self.signal_number is None:
      return 'a stop request from another process'
    return signal.Signals(self.signal_number).name

  def requested_here(self) -> bool:
    """A stop request seen by this process alone; asked between steps, only in
    single-process runs (all processes of a run must stop at the same step)."""
    return jax.process_count() == 1 and self.signal_number is not None

  def requested_during_startup(self) -> bool:
    """Whether to stop before the first step (asked by every process at the same points)."""
    return self._agreed()

  def requested(self) -> bool:
    return self._agreed()

  def _agreed(self) -> bool:
    local = self.signal_number is not None
    if jax.process_count() == 1:
      return local
    # Every process must stop at the same step to save collectively.
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))
