"""What a run is built from: the dataset and the model named by the config, checked together."""
import os

import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from resnet_jax.errors import ConfigError, WeightsError, DatasetError
from resnet_jax.train.checkpoint import flatten

# Where SIGNS is looked for when config.data_dir is None (relative to the working directory).
DEFAULT_SIGNS_DIR = os.path.join('data', 'signs')


def load_data(config: ml_collections.ConfigDict):
  """The config's dataset; file problems name config.data_dir as well as the file.

  SIGNS with data_dir None uses the real files in data/signs when they are there and the
  synthetic set (generated once into cache_dir) otherwise; an explicit data_dir must hold
  the files. Generated data use seed 0 whatever config.seed is: runs that differ only in
  their seed train on the same data.
  """
  from resnet_jax import data
  try:
    if config.dataset == 'signs':
      if config.data_dir is not None:
        return data.load_signs(config.data_dir)
      search = DEFAULT_SIGNS_DIR if os.path.isdir(DEFAULT_SIGNS_DIR) else None
      return data.load_signs_or_synthetic(search, config.cache_dir, seed=0)
    return data.load_dataset(config.dataset, data_dir=config.data_dir,
                             cache_dir=config.cache_dir, image_size=config.image_size, seed=0)
  except DatasetError as error:
    raise ConfigError(f'config.data_dir={config.data_dir!r} (dataset {config.dataset!r}): '
                      f'{error}') from error


def check_data_fits(config: ml_collections.ConfigDict, dataset) -> None:
  """ConfigError if the data contradicts num_classes or image_size, or a split is empty."""
  height, width, _ = dataset.image_shape
  if (height, width) != (config.image_size, config.image_size):
    raise ConfigError(f'config.image_size={config.image_size}: the dataset '
                      f'{config.dataset!r} holds {height}x{width} images; expected them equal')
  if dataset.num_classes != config.num_classes:
    raise ConfigError(f'config.num_classes={config.num_classes}: the dataset '
                      f'{config.dataset!r} has {dataset.num_classes} classes; expected them equal')
  for name in ('train', 'test'):
    if len(getattr(dataset, name)) == 0:
      raise ConfigError(f'dataset {config.dataset!r}: the {name} split is empty')


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The config's network (compute dtype, sync BN, frozen BN for a frozen backbone)."""
  from resnet_jax import models
  overrides = dict(num_classes=config.num_classes, layout=config.layout,
                   dtype=jnp.bfloat16 if config.dtype == 'bfloat16' else jnp.float32,
                   conv_impl=config.conv_impl)
  if config.sync_bn:
    overrides['bn_axis_name'] = 'batch'
  if config.freeze_backbone:
    overrides['frozen_bn'] = True
  if config.zero_init_last_bn:
    overrides['zero_init_last_bn'] = True
  model = models.create_model(config.model, **overrides)
  models.check_input_size(model, config.image_size)
  return model


def initial_variables(config: ml_collections.ConfigDict, model: nn.Module, template: dict) -> dict:
  """{'params', 'batch_stats'} to start from when config.init_from names pretrained weights.

  init_from is either a Keras .h5 file (the course's pretrained ResNet50) or a directory
  written by resnet_jax.weights.save_variables. The classifier `head` is re-initialised
  when its shape differs (a new number of classes); every other array must match.
  """
  from resnet_jax import weights
  path = config.init_from
  if not os.path.exists(path):
    raise ConfigError(f'config.init_from={path!r} does not exist; expected a Keras .h5 file '
                      'or a directory of saved variables')
  if os.path.isdir(path):
    loaded = weights.restore_variables(path)
  else:
    # The file's head is kept when it fits; a notop file or a head for other classes gets the
    # fresh head of `template`. Any other mismatch still raises, from the second attempt.
    try:
      loaded = weights.load_keras_h5(path, model, init_variables=template)
    except WeightsError:
      loaded = weights.load_keras_h5(path, model, init_variables=template, skip_head=True)
  result = {}
  for collection in ('params', 'batch_stats'):
    mine, theirs = dict(template[collection]), dict(loaded.get(collection, {}))
    if 'head' in mine and 'head' in theirs and _shapes(theirs['head']) != _shapes(mine['head']):
      theirs['head'] = mine['head']  # New classes: keep the fresh head.
    have, want = flatten(theirs), flatten(mine)
    for name in sorted(set(have) | set(want)):
      got, expected = _shape(have.get(name)), _shape(want.get(name))
      if got != expected:
        raise ConfigError(f'config.init_from={path!r}: {collection}/{name} has shape {got} '
                          f'there but {expected} in the model built from the config')
    result[collection] = theirs
  return result


def _shape(leaf):
  return 'absent' if leaf is None else tuple(leaf.shape)


def _shapes(tree):
  return {k: _shapes(v) if isinstance(v, dict) else tuple(v.shape) for k, v in tree.items()}
