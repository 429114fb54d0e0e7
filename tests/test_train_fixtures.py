"""The shared test data (tests/helpers.py) is learnable: brightness alone tells the class, and
it reaches the step through the one input pipeline as stored (the NaN trigger included)."""
import numpy as np

from helpers import FAULT_NUM_TRAIN, fault_config, fault_dataset, make_split
from resnet_jax.data import pipeline
from resnet_jax.data.layout import BatchLayout
from resnet_jax.train import setup


def test_tiny_data_is_learnable_by_brightness():
  split = make_split(300, 0)
  brightness = split.images.reshape(len(split), -1).mean(1)
  predicted = np.digitize(brightness, [34.5 + 40, 34.5 + 120])  # Mean noise + 80 per class.
  assert np.mean(predicted == split.labels) > 0.95


def test_poisoned_examples_and_only_those_reach_255():
  split = make_split(50, 0, poison_index=[3, 7])
  assert np.flatnonzero(split.images.reshape(50, -1).max(1) == 255).tolist() == [3, 7]
  assert split.images[[3, 7], 0, 0, 0].tolist() == [255, 255]


def test_the_tiny_data_go_through_the_pipeline_as_stored():
  # Without augmentation (the helpers' configs) each step's batch is the stored images in
  # the epoch's order: a poisoned example's first pixel reaches TinyNet's trigger.
  config = fault_config()
  dataset = fault_dataset(poison_index=[5])
  recipe = setup.input_recipe(config, dataset.max_size)
  layout = BatchLayout(config.train.batch_size, (0,), config.train.batch_size)
  per_epoch = FAULT_NUM_TRAIN // config.train.batch_size
  data = pipeline.train_dataset(dataset.train, layout, recipe, 0, per_epoch)
  batches = list(pipeline.iterate(data, 1))
  assert len(batches) == per_epoch and batches[0]['image'].shape == (1, 8, 8, 8, 3)
  order = pipeline.epoch_order(config.train.seed, 0, FAULT_NUM_TRAIN)
  images = np.concatenate([b['image'][0] for b in batches])
  labels = np.concatenate([b['label'][0] for b in batches])
  np.testing.assert_array_equal(images, dataset.train.images[order])
  np.testing.assert_array_equal(labels, dataset.train.labels[order])
  assert (images[:, 0, 0, 0] == 255).sum() == 1
