"""Putting host arrays on this process's devices, in the layout pmap expects."""
import collections
from typing import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def local_mesh(devices: Sequence[jax.Device]) -> Mesh:
  """A one-axis mesh named 'batch' over this process's devices, in pmap's order."""
  return Mesh(np.asarray(devices), ('batch',))


def shard_leading_axis(tree, devices: Sequence[jax.Device]):
  """Puts arrays whose leading axis is the local device count onto those devices."""
  sharding = NamedSharding(local_mesh(devices), PartitionSpec('batch'))
  return jax.device_put(tree, sharding)


def replicate_on_devices(tree, devices: Sequence[jax.Device]):
  """Copies every array to every device, stacked on a new leading device axis.

  The stacking is a zero-copy broadcast view on the host; each device receives one copy.
  """
  count = len(devices)
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x)[None], (count,) + np.shape(x)),
                         tree)
  return shard_leading_axis(stacked, devices)


def prefetch_to_devices(batches: Iterator[dict], devices: Sequence[jax.Device],
                        size: int = 2) -> Iterator[dict]:
  """Transfers host batches to the devices `size` steps ahead (transfers are asynchronous)."""
  queue = collections.deque()
  for batch in batches:
    queue.append(shard_leading_axis(batch, devices))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
