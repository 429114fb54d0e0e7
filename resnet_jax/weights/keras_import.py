"""`load_keras_h5`: a Keras h5 file -> {'params', 'batch_stats'} for one of our models.

Reading is keras_h5.py's job, pairing layers keras_mapping.py's (its docstring has
the rules); this module fills the variables tree and takes the head from the
caller's fresh variables where the file has none by design. Every layer of the file,
used or skipped, has its values checked (validate.py) before anything is returned.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from resnet_jax.errors import WeightsError
from resnet_jax.weights.keras_h5 import read_keras_h5
from resnet_jax.weights.keras_mapping import (
  ROLES,
  describe,
  match_layers,
  model_layers,
  weights_by_role,
)
from resnet_jax.weights.validate import check_keras_layer

# Shapes only: any size the model accepts gives the same variables (global pooling).
_TEMPLATE_INPUT = (1, 64, 64, 3)


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def model_template(model):
  """Shapes of `model`'s variables, without computing anything."""
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(_TEMPLATE_INPUT), train=False))


def load_keras_h5(path, model=None, *, init_variables=None, skip_head: bool = False):
  """Variables for `model` from a Keras h5 weights file, exactly.

  Args:
    path: a Keras h5 file in any layout keras_h5.read_keras_h5 reads.
    model: a model from `create_model(...)`; its variables' shapes are taken from
      `jax.eval_shape` (nothing is computed). May be None if `init_variables` is
      given.
    init_variables: freshly initialised {'params', 'batch_stats'} of the same model
      (`model.init(...)`). They supply what the file lacks by design, the
      classifier of a `_notop` file, and the head when `skip_head` is True; they
      also fix the variables' shapes. Needed only in those two cases.
    skip_head: ignore the file's classifier (e.g. 1000 ImageNet classes loaded
      into a 6-class model) and take the head from `init_variables`.

  Returns:
    {'params', 'batch_stats'}: nested dicts of float32 numpy arrays with exactly the
    structure of `model.init`'s.

  Raises:
    WeightsError: the file cannot be read, does not fit the model (names the
      layer, the expected and found shapes, and the file), or holds a NaN or infinity
      anywhere or a BatchNorm moving variance <= 0 (validate.py; names the file, the
      layer, the weight and the model's variable it fills).
  """
  if init_variables is not None:
    template = init_variables
  elif model is not None:
    template = model_template(model)
  else:
    raise WeightsError(f'load_keras_h5({path}): pass the model or init_variables')
  weights = read_keras_h5(path)
  layers = model_layers(template)
  matched = match_layers(weights, layers, skip_head=skip_head)
  variables = {'params': {}, 'batch_stats': {}}
  for layer in layers:
    their = matched.get(layer.path)
    if their is None:  # Only the head can be missing; match_layers checks the rest.
      arrays = _head_from(init_variables, layer, weights.path, skip_head)
    else:
      # Checked as float32, the values the model gets (a float64 1e300 becomes inf).
      arrays = {k: np.asarray(a, np.float32) for k, a in weights_by_role(layer, their).items()}
      check_keras_layer(weights.path, their, arrays, {
          keras: '/'.join((ROLES[layer.kind][keras][0], *layer.path, ROLES[layer.kind][keras][1]))
          for keras in arrays})
    for keras_name, array in arrays.items():
      collection, leaf = ROLES[layer.kind][keras_name]
      _set(variables[collection], layer.path + (leaf,), np.asarray(array, np.float32))
  used = {their.name for their in matched.values()}
  for their in weights.layers.values():  # A classifier skipped by skip_head: still checked.
    if their.name not in used:
      check_keras_layer(weights.path, their, dict(zip(their.weight_names, their.arrays)))
  wanted = {k: template[k] for k in ('params', 'batch_stats') if k in template}
  missing = set(traverse_util.flatten_dict(wanted)) - set(traverse_util.flatten_dict(variables))
  if missing:  # model_layers accounts for every variable; this guards that promise.
    raise WeightsError(
        f'{weights.path} filled no value for the model variables {sorted(missing)[:5]}')
  return variables


def _head_from(init_variables, layer, path, skip_head):
  """Keras weight name -> the caller's fresh array, for `layer` (the head)."""
  reason = ('skip_head=True' if skip_head else
            f'{path} has no classifier (a notop file)')
  if init_variables is None:
    raise WeightsError(
        f"{reason}, so the model's {layer.label} {describe(layer.weights)} must come "
        'from init_variables: pass init_variables=model.init(...)')
  arrays = {}
  for keras_name, (collection, leaf) in ROLES[layer.kind].items():
    if keras_name not in layer.weights:
      continue
    subtree = init_variables.get(collection, {})
    for key in layer.path + (leaf,):
      subtree = subtree.get(key) if hasattr(subtree, 'get') else None
    if subtree is None or tuple(subtree.shape) != layer.weights[keras_name]:
      raise WeightsError(
          f"{reason}, but init_variables has no {collection} {layer.label}/{leaf} of "
          f'shape {layer.weights[keras_name]}')
    arrays[keras_name] = subtree
  return arrays
