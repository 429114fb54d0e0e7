"""Model variables ({'params', 'batch_stats'}) as a standalone Orbax checkpoint.

This is what `experiments/convert_keras.py` writes and what a training run can
start from (`init_from`). The checkpoint directory holds one PyTree, restored by
`restore_variables(directory)` or by plain Orbax,
`orbax.checkpoint.StandardCheckpointer().restore(directory)`:

    {'params':      {'stem_conv': {'kernel', 'bias'}, 'stem_bn': {'scale', 'bias'},
                     'stage1_block1': {'conv1': {...}, 'bn1': {...}, ...,
                                       'proj_conv': {...}, 'proj_bn': {...}},
                     ..., 'head': {'kernel', 'bias'}},
     'batch_stats': {'stem_bn': {'mean', 'var'},
                     'stage1_block1': {'bn1': {'mean', 'var'}, ...}, ...}}

all float32, with exactly the structure of `model.init(...)` for the model it was
made for. It is not a training checkpoint: no step, optimizer state or rng.
Restoring checks the values as importing a Keras file does (validate.py).
"""
import os

import numpy as np
import orbax.checkpoint as ocp

from resnet_jax.errors import CheckpointError
from resnet_jax.weights.validate import check_variables

VARIABLE_COLLECTIONS = ('params', 'batch_stats')


def save_variables(directory, variables) -> str:
  """Writes {'params', 'batch_stats'} to a new Orbax checkpoint directory.

  Orbax writes into a temporary directory and renames it when complete, so a
  failed save leaves no partial checkpoint at `directory`.

  Returns:
    the absolute path written.

  Raises:
    CheckpointError: `directory` already exists (nothing is overwritten), or the
      tree is not {'params', 'batch_stats'}.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    raise CheckpointError(
        f'{directory} already exists; refusing to overwrite it (expected a new path)')
  if set(variables) != set(VARIABLE_COLLECTIONS):
    raise CheckpointError(
        f'variables to save have collections {sorted(variables)}; expected '
        f'{list(VARIABLE_COLLECTIONS)}')
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, dict(variables))
  return directory


def restore_variables(directory, template=None):
  """Reads {'params', 'batch_stats'} written by save_variables.

  Args:
    directory: the checkpoint directory.
    template: optional variables (arrays or ShapeDtypeStructs) of the model they
      are for; then the structure and every shape must match it.

  Returns:
    {'params', 'batch_stats'} of float32 numpy arrays.

  Raises:
    CheckpointError: missing directory, not such a checkpoint, or not matching
      `template` (names the variable, expected and found shapes).
    WeightsError: a NaN or infinity anywhere, or a BatchNorm moving variance <= 0
      (validate.py; names the directory and the variable).
  """
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    raise CheckpointError(f'checkpoint directory {directory} does not exist')
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(directory)
  except Exception as e:  # Orbax raises many kinds; the cause stays chained.
    raise CheckpointError(
        f'{directory} is not a readable Orbax checkpoint of model variables: {e}'
    ) from e
  if not isinstance(restored, dict) or set(restored) != set(VARIABLE_COLLECTIONS):
    found = sorted(restored) if isinstance(restored, dict) else type(restored).__name__
    raise CheckpointError(
        f'{directory} holds {found}; expected {list(VARIABLE_COLLECTIONS)}')
  restored = _to_numpy(restored)
  if template is not None:
    _check_matches(directory, restored, template)
  check_variables(directory, restored)
  return restored


def _to_numpy(tree):
  return {k: _to_numpy(v) if isinstance(v, dict) else np.asarray(v, np.float32)
          for k, v in tree.items()}


def _check_matches(directory, restored, template, prefix=''):
  found_keys, wanted_keys = set(restored), set(template)
  if found_keys != wanted_keys:
    raise CheckpointError(
        f'{directory}: variables under {prefix or "the root"!r} are '
        f'{sorted(found_keys)}; the model expects {sorted(wanted_keys)}')
  for key in sorted(wanted_keys):
    name = f'{prefix}/{key}' if prefix else key
    mine, theirs = template[key], restored[key]
    if hasattr(mine, 'shape'):
      if isinstance(theirs, dict):
        raise CheckpointError(
            f'{directory}: {name} is a group {sorted(theirs)}; the model expects an '
            f'array of shape {tuple(mine.shape)}')
      if tuple(mine.shape) != tuple(theirs.shape):
        raise CheckpointError(
            f'{directory}: variable {name} has shape {tuple(theirs.shape)}; the '
            f'model expects {tuple(mine.shape)}')
    else:
      if not isinstance(theirs, dict):
        raise CheckpointError(
            f'{directory}: {name} is an array; the model expects a group {sorted(mine)}')
      _check_matches(directory, theirs, mine, name)
