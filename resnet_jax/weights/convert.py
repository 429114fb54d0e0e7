"""A Keras h5 file -> an Orbax checkpoint of our model's variables (convert_keras.py)."""
import dataclasses
import os

import jax
import jax.numpy as jnp

from resnet_jax.errors import CheckpointError, WeightsError
from resnet_jax.models import check_input_size, create_model
from resnet_jax.weights.checkpoint import save_variables
from resnet_jax.weights.keras_h5 import KerasWeights, read_keras_h5
from resnet_jax.weights.keras_import import load_keras_h5
from resnet_jax.weights.keras_mapping import file_layer_kind


@dataclasses.dataclass(frozen=True)
class Conversion:
  """What `convert_keras_h5` did.

  Attributes:
    checkpoint: absolute path of the checkpoint written.
    file_layout: the h5 layout read (see keras_h5.py).
    file_layers: number of layers with weights in the file.
    num_values: number of values in the variables written.
    num_classes: classes of the checkpoint's head.
    file_classes: classes of the file's classifier; None for a notop file.
    fresh_head: whether the head was freshly initialised rather than read.
  """
  checkpoint: str
  file_layout: str
  file_layers: int
  num_values: int
  num_classes: int
  file_classes: int | None
  fresh_head: bool


def file_num_classes(weights: KerasWeights) -> int | None:
  """Output size of the file's classifier (its last Dense layer); None without one."""
  dense = [layer for layer in weights.layers.values() if file_layer_kind(layer) == 'dense']
  return int(dense[-1].arrays[0].shape[-1]) if dense else None


def convert_keras_h5(in_path, out_dir, *, model_name: str = 'resnet50',
                     layout: str = 'keras', num_classes: int | None = None,
                     seed: int = 0, image_size: int = 64,
                     arg_names: dict | None = None) -> Conversion:
  """Loads a Keras h5 file into `create_model(model_name, ...)` and saves the variables.

  Args:
    in_path: a Keras h5 file (any layout read_keras_h5 reads).
    out_dir: the new checkpoint directory; it must not exist.
    model_name, layout: passed to create_model.
    num_classes: classes of the head; None takes the file's. When the file has no
      classifier or one of another size, the head is initialised from `seed` by
      `model.init` on an image_size x image_size input.
    arg_names: how the caller's users name these arguments, for the messages of errors
      that one of them fixes (convert_keras.py: {'num_classes': '--num_classes', ...}).

  Raises:
    CheckpointError: out_dir exists, or a notop file comes without num_classes.
    WeightsError / ConfigError: the file does not fit the model, a bad name, or a damaged
      value (a NaN or infinity, a BatchNorm moving variance <= 0; validate.py): nothing is
      written.
  """
  named = lambda arg: (arg_names or {}).get(arg, arg)
  out_dir = os.path.abspath(os.fspath(out_dir))
  if os.path.exists(out_dir):  # Checked first, before any slow work.
    raise CheckpointError(f'{named("out_dir")} {out_dir} already exists; refusing to overwrite '
                          'it; expected a new directory')
  weights = read_keras_h5(in_path)
  file_classes = file_num_classes(weights)
  num_classes = num_classes or file_classes
  if num_classes is None:
    raise WeightsError(
        f'{weights.path} has no classifier (a notop file); give {named("num_classes")}, the '
        'number of classes of the new head (e.g. 6 for SIGNS)')
  model = create_model(model_name, layout=layout, num_classes=num_classes)
  fresh_head = file_classes != num_classes
  init_variables = None
  if fresh_head:
    check_input_size(model, image_size)
    init = jax.jit(lambda rng: model.init(
        rng, jnp.zeros((1, image_size, image_size, 3)), train=False))
    init_variables = init(jax.random.key(seed))
  variables = load_keras_h5(in_path, model, init_variables=init_variables,
                            skip_head=fresh_head and file_classes is not None)
  checkpoint = save_variables(out_dir, variables)
  return Conversion(
      checkpoint=checkpoint, file_layout=weights.layout, file_layers=len(weights.layers),
      num_values=sum(int(x.size) for x in jax.tree.leaves(variables)),
      num_classes=num_classes, file_classes=file_classes, fresh_head=fresh_head)
