"""The input pipeline: which examples make up each step's batch, and how they reach the devices.

The order is a pure function of (data key, epoch): each epoch is
`jax.random.permutation(fold_in(data_key, epoch), N)`, and step s of the run uses the
slice `s % steps_per_epoch` of epoch `s // steps_per_epoch`. So the pipeline's position
is the step itself, and a resumed run sees exactly the batches an unbroken one would.

Two ways to feed the devices, yielding identical batches (the training loop's feeds,
resnet_jax.train.feeds, are built on them):
- device-resident (the default where the split fits): the whole uint8 split is copied
  once to every device and each step gathers its batch there by index
  (`gather_train_batch`), so an epoch needs no host round trip;
- host iterator (`train_batches` / `eval_batches` + `prefetch_to_devices`): numpy batches
  shaped [local_devices, per_device, ...] transferred a few steps ahead.

Each device takes the slice `global_device_index * per_device` of every global batch, with
global_device_index = process_index * local_device_count + local_index, so in multi-process
runs each process reads its own disjoint part of each batch.
"""
import collections
import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from resnet_jax.data.types import Split
from resnet_jax.errors import ConfigError

# Replicated splits above this size stay on the host unless the device reports its memory.
_DEFAULT_RESIDENT_LIMIT_BYTES = 4 << 30


@dataclasses.dataclass(frozen=True)
class DeviceLayout:
  """How a global batch is spread over processes and their local devices."""
  global_batch: int
  process_index: int
  process_count: int
  local_devices: tuple

  @property
  def local_device_count(self) -> int:
    return len(self.local_devices)

  @property
  def device_count(self) -> int:
    return self.local_device_count * self.process_count

  @property
  def per_device_batch(self) -> int:
    return self.global_batch // self.device_count

  @property
  def global_device_indices(self) -> np.ndarray:
    """int32 [local_devices]: each local device's index among all devices of the run."""
    first = self.process_index * self.local_device_count
    return np.arange(first, first + self.local_device_count, dtype=np.int32)


def device_layout(global_batch: int, num_train: Optional[int] = None,
                  field: str = 'train.batch_size') -> DeviceLayout:
  """The layout of this process; ConfigError (naming `field`) if the batch cannot be split.

  Args:
    global_batch: examples per step over all devices of all processes.
    num_train: size of the training split; a batch larger than it is an error (an
      epoch would have no step). None skips that check (evaluation batches are padded).
    field: the config field named in errors.
  """
  layout = DeviceLayout(global_batch, jax.process_index(), jax.process_count(),
                        tuple(jax.local_devices()))
  if global_batch < 1:
    raise ConfigError(f'config.{field}={global_batch}: expected a positive batch size')
  if global_batch % layout.device_count:
    raise ConfigError(
        f'config.{field}={global_batch} is not divisible by the {layout.device_count} devices '
        f'({layout.process_count} process(es) x {layout.local_device_count} local); expected a '
        f'multiple of {layout.device_count}')
  if num_train is not None and global_batch > num_train:
    raise ConfigError(
        f'config.{field}={global_batch} is larger than the training split ({num_train} '
        f'examples); expected at most {num_train}, since the last partial batch is dropped')
  return layout


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Full training batches per epoch; the last partial batch is dropped."""
  return num_examples // global_batch


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  """Evaluation batches covering every example once; the last one is padded."""
  return -(-num_examples // global_batch)


def epoch_permutation(data_key: jax.Array, epoch, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch` (jittable; `epoch` may be traced)."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


_jitted_permutation = jax.jit(epoch_permutation, static_argnums=2)


def host_epoch_permutation(data_key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
  """`epoch_permutation` fetched to the host, for the host iterator."""
  return np.asarray(_jitted_permutation(data_key, epoch, num_examples))


def gather_train_batch(images: jax.Array, labels: jax.Array, permutation: jax.Array,
                       step_in_epoch, device_index, per_device_batch: int,
                       global_batch: int) -> dict:
  """One device's share of one step's batch, gathered by index (jittable, per device).

  Args:
    images: the device-resident split, uint8 [N, H, W, C].
    labels: int32 [N].
    permutation: the epoch's order, int [N].
    step_in_epoch: which global batch of the epoch (may be traced).
    device_index: this device's global index (may be traced).
    per_device_batch: examples per device (static).
    global_batch: examples per step over all devices (static).

  Returns:
    {'image': uint8 [B, H, W, C], 'label': int32 [B], 'example_id': int32 [B]} where
    example_id is the position of each example in the global batch (it keys augmentation).
  """
  example_ids = device_index * per_device_batch + jnp.arange(per_device_batch, dtype=jnp.int32)
  indices = jax.lax.dynamic_slice(
      permutation, (step_in_epoch * global_batch + device_index * per_device_batch,),
      (per_device_batch,))
  return {'image': jnp.take(images, indices, axis=0),
          'label': jnp.take(labels, indices, axis=0),
          'example_id': example_ids.astype(jnp.int32)}


def train_batches(split: Split, layout: DeviceLayout, data_key: jax.Array,
                  start_step: int = 0, num_steps: Optional[int] = None) -> Iterator[dict]:
  """Host iterator over this process's part of each training batch, from `start_step`.

  Yields numpy dicts {'image': uint8 [L, B, H, W, C], 'label': int32 [L, B],
  'example_id': int32 [L, B]} with L local devices and B examples per device; the same
  examples `gather_train_batch` picks for the same step.
  """
  per_epoch = steps_per_epoch(len(split), layout.global_batch)
  per_device = layout.per_device_batch
  # Positions of this process's examples inside a global batch, [L, B].
  example_ids = (layout.global_device_indices[:, None] * per_device
                 + np.arange(per_device, dtype=np.int32)[None, :])
  step = start_step
  permutation, permutation_epoch = None, None
  while num_steps is None or step < start_step + num_steps:
    epoch, step_in_epoch = divmod(step, per_epoch)
    if epoch != permutation_epoch:
      permutation = host_epoch_permutation(data_key, epoch, len(split))
      permutation_epoch = epoch
    indices = permutation[step_in_epoch * layout.global_batch + example_ids]
    yield {'image': split.images[indices], 'label': split.labels[indices],
           'example_id': example_ids.astype(np.int32)}
    step += 1


def eval_batches(split: Split, layout: DeviceLayout) -> Iterator[dict]:
  """Host iterator over this process's part of each evaluation batch, in order.

  The last batch is padded (with copies of example 0) and `mask` marks the real examples,
  so that every example counts exactly once. Yields {'image', 'label', 'mask'} with a
  [L, B] leading shape.
  """
  per_device = layout.per_device_batch
  offsets = (layout.global_device_indices[:, None] * per_device
             + np.arange(per_device)[None, :])
  for batch in range(num_eval_batches(len(split), layout.global_batch)):
    positions = batch * layout.global_batch + offsets
    mask = positions < len(split)
    indices = np.where(mask, positions, 0)
    yield {'image': split.images[indices], 'label': split.labels[indices],
           'mask': mask.astype(np.float32)}


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


def resident_bytes(split: Split) -> int:
  """Bytes one device holds for a device-resident copy of `split`."""
  return split.images.nbytes + split.labels.nbytes


def fits_on_devices(splits: Sequence[Split], devices: Sequence[jax.Device],
                    fraction: float = 0.25) -> bool:
  """Whether replicated copies of `splits` take at most `fraction` of each device's memory."""
  needed = sum(resident_bytes(s) for s in splits)
  limit = _DEFAULT_RESIDENT_LIMIT_BYTES
  stats = None
  try:
    stats = devices[0].memory_stats()
  except Exception:  # Some backends do not implement memory_stats.
    stats = None
  if stats and stats.get('bytes_limit'):
    limit = int(stats['bytes_limit'] * fraction)
  return needed <= limit


def pad_split(split: Split, global_batch: int) -> dict:
  """The evaluation split padded to whole batches, with a mask of the real examples."""
  total = num_eval_batches(len(split), global_batch) * global_batch
  pad = total - len(split)
  images = np.concatenate([split.images, np.zeros((pad,) + split.image_shape, np.uint8)])
  labels = np.concatenate([split.labels, np.zeros((pad,), np.int32)])
  mask = np.concatenate([np.ones(len(split), np.float32), np.zeros(pad, np.float32)])
  return {'image': images, 'label': labels, 'mask': mask}


def gather_eval_batch(padded: dict, batch_index, device_index, per_device_batch: int,
                      global_batch: int) -> dict:
  """One device's share of evaluation batch `batch_index` from a padded resident split."""
  start = batch_index * global_batch + device_index * per_device_batch
  return jax.tree.map(
      lambda x: jax.lax.dynamic_slice_in_dim(x, start, per_device_batch, axis=0), padded)
