"""What a run is built from: the dataset, the input recipe and the model the config names."""
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from resnet_jax.data import augment, pipeline
from resnet_jax.errors import ConfigError, DamagedCacheError, DatasetError

# Where SIGNS is looked for when config.data.data_dir is None (relative to the working
# directory).
DEFAULT_SIGNS_DIR = os.path.join('data', 'signs')


def load_data(data: ml_collections.ConfigDict, eval_only: bool = False):
  """The dataset config.data names; file problems name data.data_dir as well as the file (a
  damaged cache of generated data is a DamagedCacheError saying how to regenerate it; a
  problem in prepared shards or an image folder names the file under data_dir itself).
  `eval_only` (evaluation scripts): prepared shards or a folder open their evaluation split
  alone, and the train split is empty (registry.load_dataset).

  SIGNS with data_dir None uses the real files in data/signs when they are there and the
  synthetic set (generated once into cache_dir) otherwise; an explicit data_dir must hold
  the files. Generated data use seed 0 whatever the run's seed is: runs that differ only in
  their seed train on the same data.
  """
  from resnet_jax.data import registry, signs
  data_dir = data.data_dir
  try:
    if data.name == 'signs' and data_dir is not None:
      return signs.load_signs(data_dir)
    if data.name == 'signs':
      search = DEFAULT_SIGNS_DIR if os.path.isdir(DEFAULT_SIGNS_DIR) else None
      return registry.load_signs_or_synthetic(search, data.cache_dir, seed=0)
    return registry.load_dataset(data.name, data_dir=data_dir, cache_dir=data.cache_dir,
                                 image_size=data.image_size, seed=0, eval_only=eval_only)
  except DamagedCacheError:
    raise  # Not the config's fault: the message says how to regenerate the cache.
  except DatasetError as error:
    if data.name == 'images':
      raise  # The message names the shard or file under data_dir.
    raise ConfigError(f'config.data.data_dir={data_dir!r} (dataset {data.name!r}): '
                      f'{error}') from error


def check_data_fits(config: ml_collections.ConfigDict, dataset) -> None:
  """ConfigError if the data contradicts num_classes or image_size, or a split is empty."""
  size = config.data.image_size
  if dataset.image_shape is not None and dataset.image_shape[:2] != (size, size):
    height, width, _ = dataset.image_shape
    raise ConfigError(f'config.data.image_size={size}: the dataset {config.data.name!r} holds '
                      f'{height}x{width} images; expected them equal')
  if dataset.num_classes != config.model.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes}: the dataset '
                      f'{config.data.name!r} has {dataset.num_classes} classes; expected them '
                      'equal')
  for name in ('train', 'test'):
    if len(getattr(dataset, name)) == 0:
      raise ConfigError(f'dataset {config.data.name!r}: the {name} split is empty')


def input_recipe(config: ml_collections.ConfigDict, max_size: Optional[int] = None
                 ) -> pipeline.Recipe:
  """The pipeline's recipe: config.data's image size and augmentation, config.train's seed.

  With the Inception crop, speed.crop_resize decides where each box is resized to the image
  size: in the train step ('device'; the host copies the box onto a canvas) or on the host
  ('host'); 'auto' takes the device off CPU backends (on CPU both are the same cores). A
  canvas needs the stored images' size bound (`max_size`, stated by prepared shards); without
  it the host resizes.
  """
  how, size = config.data.augment, int(config.data.image_size)
  choice = config.speed.crop_resize
  on_device = choice == 'device' or (choice == 'auto' and jax.default_backend() != 'cpu')
  canvas = 0
  if how.inception_crop and max_size and on_device:
    canvas = augment.canvas_size(max_size, size)
  return pipeline.Recipe(
      image_size=size, seed=int(config.train.seed),
      augmentation=augment.Augmentation(inception_crop=bool(how.inception_crop),
                                        crop_padding=int(how.crop_padding),
                                        flip=bool(how.flip), canvas_size=canvas))


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The config's network, as every run builds it (training, and each run of a sweep).

  create_model(config.model.name) with the model group's num_classes, layout, compute dtype,
  sync BN (bn_axis_name 'batch'), zero-initialised last BNs, block design and shortcut
  option, frozen BN for a frozen backbone (config.finetune) and speed.conv_impl;
  ConfigError if config.data.image_size is too small for it.
  """
  from resnet_jax import models
  spec = config.model
  overrides = dict(num_classes=spec.num_classes, layout=spec.layout,
                   dtype=jnp.bfloat16 if spec.dtype == 'bfloat16' else jnp.float32,
                   conv_impl=config.speed.conv_impl)
  if spec.sync_bn:
    overrides['bn_axis_name'] = 'batch'
  if config.finetune.freeze_backbone:
    overrides['frozen_bn'] = True
  if spec.zero_init_last_bn:
    overrides['zero_init_last_bn'] = True
  if spec.block_design:
    overrides['design'] = spec.block_design
  if spec.shortcut:
    overrides['shortcut'] = spec.shortcut
  model = models.create_model(spec.name, **overrides)
  models.check_input_size(model, config.data.image_size)
  return model
