"""The variables a run starts from when its config names pretrained weights
(config.finetune.init_from)."""
import os

import ml_collections
from flax import linen as nn

from resnet_jax.errors import ConfigError, WeightsError
from resnet_jax.trees import first_shape_mismatch
from resnet_jax.weights.checkpoint import VARIABLE_COLLECTIONS, restore_variables
from resnet_jax.weights.keras_import import load_keras_h5


def initial_variables(finetune: ml_collections.ConfigDict, model: nn.Module,
                      template: dict) -> dict:
  """{'params', 'batch_stats'} to start from: finetune.init_from's, checked against `template`.

  finetune is the config's `finetune` group; `model` is the network built from the config.

  init_from is either a Keras .h5 file (the course's pretrained ResNet50) or a directory
  written by resnet_jax.weights.save_variables. The classifier `head` is the fresh one of
  `template` when its shape differs (a new number of classes); every other array must match
  `template` (the model's fresh variables) in path and shape.

  Raises:
    ConfigError: init_from does not exist, or holds an array missing from the model, absent
      from the file or of another shape (named with both shapes).
    WeightsError, CheckpointError: the file or directory cannot be read as weights, or holds
      a NaN or infinity anywhere or a BatchNorm moving variance <= 0 (validate.py: checked
      by load_keras_h5 and restore_variables, so before the run keeps its workdir).
  """
  path = finetune.init_from
  if not os.path.exists(path):
    raise ConfigError(f'config.finetune.init_from={path!r} does not exist; expected a Keras '
                      '.h5 file or a directory of saved variables')
  if os.path.isdir(path):
    loaded = restore_variables(path)
  else:
    # The file's head is kept when it fits; a notop file or a head for other classes gets the
    # fresh head of `template`. Any other mismatch still raises, from the second attempt.
    try:
      loaded = load_keras_h5(path, model, init_variables=template)
    except WeightsError:
      loaded = load_keras_h5(path, model, init_variables=template, skip_head=True)
  result = {}
  for collection in VARIABLE_COLLECTIONS:
    mine, theirs = dict(template[collection]), dict(loaded.get(collection, {}))
    if 'head' in mine and 'head' in theirs and first_shape_mismatch(theirs['head'], mine['head']):
      theirs['head'] = mine['head']  # New classes: keep the fresh head.
    result[collection] = theirs
  wanted = {collection: template[collection] for collection in VARIABLE_COLLECTIONS}
  mismatch = first_shape_mismatch(result, wanted)
  if mismatch is not None:
    name, got, expected = mismatch
    raise ConfigError(f'config.finetune.init_from={path!r}: {name} has shape {got} there but '
                      f'{expected} in the model built from the config')
  return result

