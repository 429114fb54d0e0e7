"""Reads the weights of a Keras h5 file into an ordered {layer name: KerasLayer}.

Keras writes three h5 layouts, all read here:

* weights only, Keras 2 style (`model.save_weights('x.h5')` in Keras 2, Keras
  Applications' `resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5`): the root
  attribute `layer_names` lists every layer of the model in `model.layers` order
  (graph order); each layer has a group whose attribute `weight_names` lists its
  weights, stored as datasets at those paths inside the group, e.g.
  `conv1_conv/kernel:0` (Keras 2) or `conv1_conv/kernel` (Keras 3's legacy writer).
  Long attributes are split into chunks `layer_names0`, `layer_names1`, ...
* full model (`model.save('x.h5')`, how the course's `resnet50.h5` was written):
  the same structure inside the group `model_weights`, next to the model config.
* Keras 3 native (`model.save_weights('x.weights.h5')`): `layers/<key>/vars/<i>`,
  no layer order and no weight names. The key is the layer's class in snake case,
  numbered per class in the writer's `model.layers` order (graph order): `conv2d`,
  `conv2d_1`, ..., `batch_normalization_3`, whatever the layers are called. Recent
  Keras 3 (3.15 does) also stores the layer's own name as the attribute `name` of
  its `vars` group; layers are named by it where present, else by their key.
  Layers come back ordered by key, numbers compared as numbers (`conv2d_2` before
  `conv2d_10`), so within each kind of layer in graph order.

Weights keep the order Keras stores them in: Conv2D [kernel (H, W, in, out), bias],
BatchNormalization [gamma, beta, moving_mean, moving_variance], Dense [kernel, bias].
A nested model (e.g. a Keras Applications base inside a Sequential) is stored as one
layer whose weight names carry the inner layers' names; it is split back into them.
"""
import dataclasses
import os
import re

import h5py
import numpy as np

from resnet_jax.errors import WeightsError

LAYOUT_WEIGHTS_ONLY = 'weights_only'
LAYOUT_FULL_MODEL = 'full_model'
LAYOUT_KERAS3 = 'keras3_weights'


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  """The weights of one Keras layer.

  Attributes:
    name: the layer's name, e.g. 'conv1_conv' or 'conv2d_3'.
    weight_names: short name of each weight ('kernel', 'bias', 'gamma', 'beta',
      'moving_mean', 'moving_variance'); the position ('0', '1', ...) where the file
      stores no names (Keras 3 native layout).
    arrays: the weights, in the file's order.
  """
  name: str
  weight_names: tuple[str, ...]
  arrays: tuple[np.ndarray, ...]

  @property
  def shapes(self) -> tuple[tuple[int, ...], ...]:
    return tuple(a.shape for a in self.arrays)


@dataclasses.dataclass(frozen=True)
class KerasWeights:
  """The weighted layers of a Keras h5 file.

  Attributes:
    path: the file.
    layout: LAYOUT_WEIGHTS_ONLY, LAYOUT_FULL_MODEL or LAYOUT_KERAS3.
    layers: layer name -> KerasLayer, for layers that have weights only, in graph
      order (for the Keras 3 native layout, graph order within each kind of layer;
      see the module docstring).
  """
  path: str
  layout: str
  layers: dict[str, KerasLayer]

  def arrays(self) -> dict[str, list[np.ndarray]]:
    """{layer name: [arrays]}, in the same order as `layers`."""
    return {name: list(layer.arrays) for name, layer in self.layers.items()}


def read_keras_h5(path) -> KerasWeights:
  """Reads every weighted layer of a Keras h5 file (any layout in the docstring)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f'Keras weights file {path} does not exist')
  try:
    h5 = h5py.File(path, 'r')
  except OSError as e:
    raise WeightsError(
        f'{path} is not an HDF5 file ({e}); expected a Keras .h5 weights file') from e
  with h5:
    if 'model_weights' in h5:
      layers = _read_layer_names_group(h5['model_weights'], path)
      layout = LAYOUT_FULL_MODEL
    elif _attribute(h5, 'layer_names') is not None:
      layers = _read_layer_names_group(h5, path)
      layout = LAYOUT_WEIGHTS_ONLY
    elif 'layers' in h5:
      layers = _read_keras3_group(h5['layers'], path)
      layout = LAYOUT_KERAS3
    else:
      raise WeightsError(
          f'{path} has root keys {sorted(h5.keys())} and attributes '
          f'{sorted(h5.attrs.keys())}; expected a Keras weights file: a root '
          "attribute 'layer_names', a 'model_weights' group or a 'layers' group")
  if not layers:
    raise WeightsError(f'{path} holds no layer with weights')
  return KerasWeights(path=path, layout=layout, layers=layers)


def _attribute(group, name):
  """A list-valued attribute as a list of str, joining Keras's chunks; None if absent."""
  if name in group.attrs:
    values = list(group.attrs[name])
  elif f'{name}0' in group.attrs:
    values, chunk = [], 0
    while f'{name}{chunk}' in group.attrs:
      values.extend(group.attrs[f'{name}{chunk}'])
      chunk += 1
  else:
    return None
  return [v.decode('utf8') if isinstance(v, bytes) else str(v) for v in values]


def _read_layer_names_group(group, path) -> dict[str, KerasLayer]:
  """Layers of a group in the Keras 2 layout (root or 'model_weights')."""
  layers = {}
  for layer_name in _attribute(group, 'layer_names') or []:
    if layer_name not in group:
      raise WeightsError(
          f"{path}: layer '{layer_name}' is listed in layer_names but has no group")
    layer_group = group[layer_name]
    weight_names = _attribute(layer_group, 'weight_names') or []
    if not weight_names:
      continue
    arrays = []
    for weight_name in weight_names:
      if weight_name not in layer_group:
        raise WeightsError(
            f"{path}: layer '{layer_name}' lists weight '{weight_name}' that is not "
            'stored in its group')
      arrays.append(np.asarray(layer_group[weight_name]))
    for layer in _split_nested(layer_name, weight_names, arrays):
      if layer.name in layers:
        raise WeightsError(f"{path}: layer '{layer.name}' occurs twice")
      layers[layer.name] = layer
  return layers


def _split_nested(layer_name, weight_names, arrays):
  """One KerasLayer per inner layer named in the weight paths.

  A weight path is '<layer>/<weight>[:0]'; a nested model stores its inner layers'
  weights under its own group, so their paths name several different layers.
  Keras 2 orders a nested model's weights trainable first, so an inner BN's moving
  statistics come after all kernels: grouping by inner layer restores the order.
  """
  owners = {}
  for weight_name, array in zip(weight_names, arrays):
    parts = weight_name.split('/')
    owner = parts[-2] if len(parts) > 1 else layer_name
    short = re.sub(r':\d+$', '', parts[-1])
    owners.setdefault(owner, ([], []))
    owners[owner][0].append(short)
    owners[owner][1].append(array)
  if len(owners) == 1:  # An ordinary layer: keep its own name.
    (names, values), = owners.values()
    return [KerasLayer(layer_name, tuple(names), tuple(values))]
  return [KerasLayer(owner, tuple(names), tuple(values))
          for owner, (names, values) in owners.items()]


def _natural_key(name: str):
  """'conv2d' < 'conv2d_1' < 'conv2d_2' < 'conv2d_10'; other names alphabetically."""
  match = re.fullmatch(r'(.*?)_(\d+)', name)
  if match:
    return match.group(1), int(match.group(2))
  return name, 0


def _read_keras3_group(group, path, prefix='', layers=None) -> dict[str, KerasLayer]:
  """Layers of the Keras 3 native layout: layers/<key>/vars/<i>, nested models recursed.

  A layer is named by its `vars` group's attribute `name` where the writer stored
  one; else by its key, prefixed with the keys of the models it is nested in.
  """
  layers = {} if layers is None else layers
  for key in sorted(group.keys(), key=_natural_key):
    layer_group = group[key]
    if 'layers' in layer_group:  # A nested model.
      _read_keras3_group(layer_group['layers'], path, f'{prefix}{key}/', layers)
    variables = layer_group.get('vars')
    if variables is None or not len(variables):
      continue
    name = variables.attrs.get('name', prefix + key)
    name = name.decode('utf8') if isinstance(name, bytes) else str(name)
    if name in layers:
      raise WeightsError(f"{path}: layer '{name}' occurs twice")
    order = sorted(variables.keys(), key=int)
    layers[name] = KerasLayer(name, tuple(order),
                              tuple(np.asarray(variables[k]) for k in order))
  return layers
