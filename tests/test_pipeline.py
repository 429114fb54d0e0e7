"""The input pipeline: epoch order, eval padding, process slices, host == device batches."""
import dataclasses

import jax
import numpy as np
import pytest

from resnet_jax.data import pipeline
from resnet_jax.data.types import Split
from resnet_jax.errors import ConfigError

KEY = jax.random.key(7)


def _identity_split(n, size=4):
  """Labels are the example ids, and every pixel of image i holds i % 256."""
  images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None],
                           (n, size, size, 3)).copy()
  return Split(images, np.arange(n, dtype=np.int32))


def _layout(global_batch, process_index=0, process_count=1, local=1):
  layout = pipeline.device_layout(global_batch, None)
  return dataclasses.replace(layout, process_index=process_index, process_count=process_count,
                             local_devices=tuple(range(local)))


def _epoch_ids(split, layout, epoch, key=KEY):
  per_epoch = pipeline.steps_per_epoch(len(split), layout.global_batch)
  batches = pipeline.train_batches(split, layout, key, start_step=epoch * per_epoch,
                                   num_steps=per_epoch)
  return np.concatenate([b['label'].reshape(-1) for b in batches])


def test_every_example_once_per_epoch_and_last_partial_batch_dropped():
  split = _identity_split(50)
  layout = _layout(8)
  ids = _epoch_ids(split, layout, 0)
  assert len(ids) == 48  # 6 full batches; the last 2 examples wait for another epoch.
  assert len(set(ids.tolist())) == 48
  # Over epochs, the dropped examples differ, so every example is seen.
  seen = set()
  for epoch in range(5):
    seen |= set(_epoch_ids(split, layout, epoch).tolist())
  assert seen == set(range(50))


def test_order_changes_per_epoch_and_repeats_per_seed():
  split = _identity_split(64)
  layout = _layout(8)
  first, second = _epoch_ids(split, layout, 0), _epoch_ids(split, layout, 1)
  assert sorted(first) == sorted(second) == list(range(64))
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(first, _epoch_ids(split, layout, 0))
  assert not np.array_equal(first, _epoch_ids(split, layout, 0, key=jax.random.key(8)))


def test_images_follow_their_labels():
  split = _identity_split(40)
  batch = next(pipeline.train_batches(split, _layout(8), KEY))
  np.testing.assert_array_equal(batch['image'][..., 0, 0, 0], batch['label'] % 256)


def test_batches_have_a_leading_local_device_axis_and_global_example_ids():
  split = _identity_split(64)
  batch = next(pipeline.train_batches(split, _layout(16, local=4), KEY))
  assert batch['image'].shape == (4, 4, 4, 4, 3)
  assert batch['label'].shape == (4, 4)
  np.testing.assert_array_equal(batch['example_id'], np.arange(16).reshape(4, 4))


def test_processes_take_disjoint_slices_of_each_global_batch():
  split = _identity_split(64)
  whole = next(pipeline.train_batches(split, _layout(16, local=4), KEY))
  parts = [next(pipeline.train_batches(split, _layout(16, p, 2, local=2), KEY))
           for p in (0, 1)]
  joined = np.concatenate([p['label'] for p in parts])
  np.testing.assert_array_equal(joined, whole['label'])
  assert not set(parts[0]['label'].ravel()) & set(parts[1]['label'].ravel())
  np.testing.assert_array_equal(parts[1]['example_id'], np.arange(8, 16).reshape(2, 4))


def test_resuming_mid_epoch_yields_the_same_batches():
  split = _identity_split(40)
  layout = _layout(8)
  unbroken = [b['label'] for b in pipeline.train_batches(split, layout, KEY, 0, 12)]
  resumed = [b['label'] for b in pipeline.train_batches(split, layout, KEY, 7, 5)]
  for a, b in zip(unbroken[7:], resumed):
    np.testing.assert_array_equal(a, b)


def test_device_gather_matches_the_host_iterator():
  split = _identity_split(50)
  layout = _layout(12, local=3)  # 3 "devices" of 4, gathered one device at a time.
  per_epoch = pipeline.steps_per_epoch(50, 12)
  gather = jax.jit(pipeline.gather_train_batch, static_argnums=(5, 6))
  host = pipeline.train_batches(split, layout, KEY, 0, 2 * per_epoch)
  for step, batch in enumerate(host):
    epoch, pos = divmod(step, per_epoch)
    permutation = pipeline.epoch_permutation(KEY, epoch, 50)
    for device in range(3):
      out = gather(split.images, split.labels, permutation, pos, device, 4, 12)
      np.testing.assert_array_equal(out['label'], batch['label'][device])
      np.testing.assert_array_equal(out['image'], batch['image'][device])
      np.testing.assert_array_equal(out['example_id'], batch['example_id'][device])


def test_eval_batches_pad_and_mask_so_each_example_counts_once():
  split = _identity_split(10)
  batches = list(pipeline.eval_batches(split, _layout(4, local=2)))
  assert len(batches) == 3
  labels = np.concatenate([b['label'].ravel() for b in batches])
  mask = np.concatenate([b['mask'].ravel() for b in batches])
  assert mask.sum() == 10
  np.testing.assert_array_equal(np.sort(labels[mask == 1]), np.arange(10))
  assert batches[-1]['image'].shape == (2, 2, 4, 4, 3)


def test_padded_resident_eval_split_matches_the_host_batches():
  split = _identity_split(10)
  padded = pipeline.pad_split(split, 4)
  assert padded['mask'].sum() == 10 and len(padded['mask']) == 12
  host = list(pipeline.eval_batches(split, _layout(4, local=2)))
  for index, batch in enumerate(host):
    for device in range(2):
      out = pipeline.gather_eval_batch(padded, index, device, 2, 4)
      np.testing.assert_array_equal(out['mask'], batch['mask'][device])
      real = batch['mask'][device] == 1
      np.testing.assert_array_equal(np.asarray(out['label'])[real], batch['label'][device][real])


def test_batch_larger_than_the_train_split_is_a_config_error():
  with pytest.raises(ConfigError,
                     match=r'config\.train\.batch_size=64 .*larger than the training split'):
    pipeline.device_layout(64, num_train=50)


def test_non_positive_batch_is_a_config_error():
  with pytest.raises(ConfigError, match=r'config\.run\.eval_batch_size=0'):
    pipeline.device_layout(0, field='run.eval_batch_size')


def test_resident_data_is_replicated_on_every_device():
  tree = {'x': np.arange(6).reshape(2, 3)}
  out = pipeline.replicate_on_devices(tree, jax.local_devices())
  assert out['x'].shape == (jax.local_device_count(), 2, 3)
  np.testing.assert_array_equal(np.asarray(out['x'])[0], tree['x'])
