"""The one tiny network, data and configs that the training tests share (imported as a module).

Kept tiny so that a whole training run compiles and finishes in a second or two:
`TinyNet` on `make_dataset()` with `tiny_config()` (the loop tests: 8 steps per epoch,
chunks of up to 3 steps, each one train_chunk dispatch) or `fault_config()` (the fault tests:
6 steps per epoch on `fault_dataset()`, a checkpoint every 4 steps, one dispatch per step).
The datasets are in-memory Splits, read through the same input pipeline as any other source.
"""
import logging
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from resnet_jax.data.types import Dataset, Split
from resnet_jax.train import base_config, config as config_lib, optim

NUM_CLASSES = 3
IMAGE_SIZE = 8
FAULT_NUM_TRAIN = 48  # fault_dataset(): 6 batches of 8 per epoch.
FAULT_NUM_TEST = 12


class TinyNet(nn.Module):
  """conv -> BN -> relu -> mean -> Dense('head'); optional sync BN and a NaN trigger.

  poison: when set, a batch holding an image whose first pixel is 255 gets NaN logits,
  so tests can make the steps that draw chosen examples non-finite (see `make_split`).
  """
  features: int = 8
  num_classes: int = NUM_CLASSES
  bn_axis_name: str | None = None
  poison: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    trigger = x[:, 0, 0, 0]
    # No conv bias: before BN its gradient is pure rounding noise, which Adam would amplify
    # into updates that differ between mathematically equal programs.
    y = nn.Conv(self.features, (3, 3), use_bias=False, name='conv')(x)
    y = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name, momentum=0.9,
                     name='bn')(y)
    y = nn.relu(y).mean((1, 2))
    logits = nn.Dense(self.num_classes, name='head')(y)
    if self.poison:
      # 'scale' preprocessing maps 255 to 1.0; no unpoisoned pixel reaches 230.
      logits = logits + jnp.where(jnp.max(trigger) > 0.999, jnp.nan, 0.0)
    return logits


def make_split(n: int, seed: int, size: int = IMAGE_SIZE,
               poison_index: int | Sequence[int] | None = None) -> Split:
  """Images whose brightness encodes the class (learnable), with noise; pixels stay below
  230 except the first pixel of each `poison_index` example, which is 255 (TinyNet's
  NaN trigger)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  images = rng.integers(0, 70, (n, size, size, 3)) + labels[:, None, None, None] * 80
  images = images.astype(np.uint8)
  if poison_index is not None:
    images[np.asarray(poison_index, dtype=int).reshape(-1), 0, 0, 0] = 255
  return Split(images, labels)


def make_dataset(num_train: int = 64, num_test: int = 21, poison_index=None) -> Dataset:
  return Dataset(make_split(num_train, 0, poison_index=poison_index), make_split(num_test, 1),
                 tuple('abc'), 'in-memory test data')


def fault_dataset(poison_index=None) -> Dataset:
  """The fault tests' data: `FAULT_NUM_TRAIN` training and `FAULT_NUM_TEST` test images."""
  return make_dataset(FAULT_NUM_TRAIN, FAULT_NUM_TEST, poison_index)


def tiny_config(**overrides):
  """A complete config for TinyNet on `make_dataset()` data; overrides by dotted name,
  e.g. tiny_config(**{'optim.name': 'sgd'})."""
  # loop_on_device: exercise train_chunk, a lax.scan over the chunk's steps (CPU's default
  # is a dispatch per step).
  return _config({'train.num_epochs': 3, 'run.log_every_steps': 4,
                  'run.checkpoint_every_steps': 8, 'speed.steps_per_dispatch': 3,
                  'speed.loop_on_device': True, **overrides})


def fault_config(**overrides):
  """A complete config for TinyNet on `fault_dataset()`: 6 steps per epoch, 3 epochs, a
  checkpoint every 4 steps; overrides by dotted name."""
  return _config({'train.num_epochs': 3, 'run.log_every_steps': 2,
                  'run.checkpoint_every_steps': 4, 'speed.steps_per_dispatch': 2, **overrides})


def _config(fields: dict):
  config = base_config()
  config.model.num_classes = NUM_CLASSES
  config.data.image_size = IMAGE_SIZE
  config.train.batch_size = 8
  config.optim.learning_rate = 0.01
  config.run.keep_checkpoints = 10
  config.run.progress_bar = False
  config.run.tensorboard = False
  return apply_overrides(config, fields)


def create_optimizer(config, steps_per_epoch: int):
  """optim.create_optimizer as the training loop calls it for the whole `config`: its
  `optim` group, the total steps of its `train` group, finetune.freeze_backbone."""
  return optim.create_optimizer(config.optim, steps_per_epoch,
                                config_lib.total_steps(config.train, steps_per_epoch),
                                freeze_backbone=config.finetune.freeze_backbone)


def apply_overrides(config, overrides: dict):
  """Sets each dotted field ('data.augment.flip') of `config` to its value; returns config."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


class LogRecords(logging.Handler):
  """Every log record of the loggers it is added to, as 'LEVEL name: message'."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.lines = []

  def emit(self, record):
    self.lines.append(f'{record.levelname} {record.name}: {record.getMessage()}')
