"""Small models, data and configs shared by the training tests (imported as a module).

Kept tiny so that a whole training run compiles and finishes in a second or two.
"""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from resnet_jax.data.types import Dataset, Split
from resnet_jax.train import base_config

NUM_CLASSES = 3
IMAGE_SIZE = 8


class TinyNet(nn.Module):
  """conv -> BN -> relu -> mean -> Dense('head'); optional sync BN and a NaN trigger.

  poison: when set, a batch holding an image whose first pixel is 255 gets NaN logits,
  so tests can make chosen steps non-finite.
  """
  num_classes: int = NUM_CLASSES
  bn_axis_name: str | None = None
  poison: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    trigger = x[:, 0, 0, 0]
    # No conv bias: before BN its gradient is pure rounding noise, which Adam would amplify
    # into updates that differ between mathematically equal programs.
    y = nn.Conv(8, (3, 3), use_bias=False, name='conv')(x)
    y = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name, momentum=0.9,
                     name='bn')(y)
    y = nn.relu(y).mean((1, 2))
    logits = nn.Dense(self.num_classes, name='head')(y)
    if self.poison:
      logits = logits + jnp.where(jnp.max(trigger) > 0.999, jnp.nan, 0.0)
    return logits


def make_split(n: int, seed: int, size: int = IMAGE_SIZE, poison_index=None) -> Split:
  """Images whose brightness encodes the class (learnable), with noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  images = rng.integers(0, 70, (n, size, size, 3)) + labels[:, None, None, None] * 80
  images = images.astype(np.uint8)
  if poison_index is not None:
    images[poison_index, 0, 0, 0] = 255
  return Split(images, labels)


def make_dataset(num_train: int = 64, num_test: int = 21, poison_index=None) -> Dataset:
  return Dataset(make_split(num_train, 0, poison_index=poison_index), make_split(num_test, 1),
                 tuple('abc'), 'in-memory test data')


def tiny_config(**overrides):
  """A complete config for TinyNet on `make_dataset()` data."""
  config = base_config()
  config.num_classes = NUM_CLASSES
  config.image_size = IMAGE_SIZE
  config.batch_size = 8
  config.num_epochs = 3
  config.learning_rate = 0.01
  config.log_every_steps = 4
  config.checkpoint_every_steps = 8
  config.steps_per_dispatch = 3
  config.loop_on_device = True  # Exercise the lax loop (CPU's default is a dispatch per step).
  config.keep_checkpoints = 10
  config.progress_bar = False
  config.tensorboard = False
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides: dict):
  """Sets each dotted field ('augment.flip') of `config` to its value; returns config."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def test_tiny_data_is_learnable_by_brightness():
  split = make_split(300, 0)
  brightness = split.images.reshape(len(split), -1).mean(1)
  predicted = np.digitize(brightness, [34.5 + 40, 34.5 + 120])  # Mean noise + 80 per class.
  assert np.mean(predicted == split.labels) > 0.95
