"""Which positions of each global batch this process reads, and how many batches there are.

A step's global batch is spread over every device of every process: device d of the run
(d = process_index * local_device_count + local index) takes positions
d * per_device ... d * per_device + per_device - 1. A process reads only its own devices'
positions, so processes never read the same example and 2 processes x 2 devices read what
1 x 4 does. Plain integers, no JAX: the training side (resnet_jax.train.run_shape) makes
the layout from its devices and hands it to the pipeline.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """This process's part of a global batch.

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
  def local_devices(self) -> int:
    return len(self.device_indices)

  @property
  def local_batch(self) -> int:
    return self.local_devices * self.per_device


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Full training batches per epoch; the last partial batch is dropped."""
  return num_examples // global_batch


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  """Evaluation batches covering every example once; the last one is padded."""
  return -(-num_examples // global_batch)
