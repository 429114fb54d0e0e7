"""What a run is built from: the dataset and the model named by the config, checked together."""
import os

import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from resnet_jax.errors import ConfigError, DamagedCacheError, DatasetError

# Where SIGNS is looked for when config.data.data_dir is None (relative to the working
# directory).
DEFAULT_SIGNS_DIR = os.path.join('data', 'signs')


def load_data(config: ml_collections.ConfigDict):
  """The config's dataset; file problems name config.data.data_dir as well as the file (but a
  damaged cache of generated data is a DamagedCacheError saying how to regenerate it).

  SIGNS with data_dir None uses the real files in data/signs when they are there and the
  synthetic set (generated once into cache_dir) otherwise; an explicit data_dir must hold
  the files. Generated data use seed 0 whatever config.train.seed is: runs that differ only in
  their seed train on the same data.
  """
  from resnet_jax import data
  if config.data.name == 'images':
    # Streamed: counts and classes from the index or the folder listing, no image loaded.
    # A DatasetError here names the shard or file under data_dir itself.
    return data.open_images(config.data.data_dir, config.data.image_size, seed=0)
  try:
    if config.data.name == 'signs':
      if config.data.data_dir is not None:
        return data.load_signs(config.data.data_dir)
      search = DEFAULT_SIGNS_DIR if os.path.isdir(DEFAULT_SIGNS_DIR) else None
      return data.load_signs_or_synthetic(search, config.data.cache_dir, seed=0)
    return data.load_dataset(config.data.name, data_dir=config.data.data_dir,
                             cache_dir=config.data.cache_dir, image_size=config.data.image_size,
                             seed=0)
  except DamagedCacheError:
    raise  # Not the config's fault: the message says how to regenerate the cache.
  except DatasetError as error:
    raise ConfigError(f'config.data.data_dir={config.data.data_dir!r} (dataset '
                      f'{config.data.name!r}): '
                      f'{error}') from error


def check_data_fits(config: ml_collections.ConfigDict, dataset) -> None:
  """ConfigError if the data contradicts num_classes or image_size, or a split is empty."""
  height, width, _ = dataset.image_shape
  if (height, width) != (config.data.image_size, config.data.image_size):
    raise ConfigError(f'config.data.image_size={config.data.image_size}: the dataset '
                      f'{config.data.name!r} holds {height}x{width} images; expected them equal')
  if dataset.num_classes != config.model.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes}: the dataset '
                      f'{config.data.name!r} has {dataset.num_classes} classes; expected them '
                      'equal')
  for name in ('train', 'test'):
    if len(getattr(dataset, name)) == 0:
      raise ConfigError(f'dataset {config.data.name!r}: the {name} split is empty')


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The config's network, as every run builds it (training, and each run of a sweep).

  create_model(config.model.name) with the config's num_classes, layout, compute dtype, sync
  BN
  (bn_axis_name 'batch'), frozen BN for a frozen backbone, zero-initialised last BNs, and
  the block design and shortcut option where the config names them;
  ConfigError if config.data.image_size is too small for it.
  """
  from resnet_jax import models
  overrides = dict(num_classes=config.model.num_classes, layout=config.model.layout,
                   dtype=jnp.bfloat16 if config.model.dtype == 'bfloat16' else jnp.float32,
                   conv_impl=config.speed.conv_impl)
  if config.model.sync_bn:
    overrides['bn_axis_name'] = 'batch'
  if config.finetune.freeze_backbone:
    overrides['frozen_bn'] = True
  if config.model.zero_init_last_bn:
    overrides['zero_init_last_bn'] = True
  if config.model.block_design:
    overrides['design'] = config.model.block_design
  if config.model.shortcut:
    overrides['shortcut'] = config.model.shortcut
  model = models.create_model(config.model.name, **overrides)
  models.check_input_size(model, config.data.image_size)
  return model
