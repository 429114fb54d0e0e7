"""Which Keras layer fills which of our variables (used by keras_import.load_keras_h5).

Our side (the models' naming contract): `stem_conv`, `stem_bn`, blocks
`stage{s}_block{b}` holding `conv1`, `bn1`, `conv2`, `bn2`, `conv3`, `bn3` and the
projection shortcut `proj_conv`, `proj_bn`, and the classifier `head`; pre-activation
nets (models/designs.py) add each block's `preact_bn` and the final `post_bn`, and have
no `stem_bn`.

Keras side, three naming schemes, told apart by the file's layer names:

* Keras Applications (Keras >= 2.2.5 / keras-applications 1.0.7, and Keras 3)
  names every layer: `conv1_conv`, `conv1_bn`, then `conv{s+1}_block{b}_{i}_conv`
  / `_bn` for the i-th main-path conv of our `stage{s}_block{b}` and `_0_conv` /
  `_0_bn` for its shortcut, and `predictions`; ResNetV2 adds `conv{s+1}_block{b}_
  preact_bn` (our block's `preact_bn`) and `post_bn`. Matched by name (any depth:
  ResNet50/101/152 and ResNet50V2/101V2/152V2).
* The Caffe-derived names of the first Keras ResNet50 and of the 2018 course:
  `conv1`, `bn_conv1`, `res2a_branch2a` ... `res2a_branch2c`, `res2a_branch1`
  (shortcut), `bn2a_branch2a`, ..., `fc1000` / `fc6`. Matched by name.
  In both named schemes the head is the file's one Dense layer, whatever its name.
* Any other names, such as the generated `conv2d`, `conv2d_1`, ...,
  `batch_normalization_N`, `dense` of the course's notebook, are matched by order:
  the file's Conv2D layers, taken in the file's layer order, fill our convs in the
  writer's graph order; its BatchNormalization layers fill our BNs likewise; its
  Dense layer fills the head. Kinds are told apart by the weights' shapes (4-D
  kernel: conv; 2-D kernel: dense; only vectors: BN), so how Keras interleaves
  convs and BNs does not matter, only the order within each kind, which the legacy
  layouts (`layer_names`) and the Keras 3 native layout (keys numbered per class)
  both keep.

  Graph order is `model.layers`: by depth from the output, ties in the order a
  depth-first walk from the output meets them. So a block's convs come in the order
  conv1, conv2, then conv3 and the projection shortcut's conv, which sit at the
  same depth, in the order of the `Add`'s inputs: `Add()([x, shortcut])` (the
  course) lists the shortcut after conv3, `Add()([shortcut, x])` (Keras
  Applications) before it; the shortcut's BN likewise after or before bn3. The
  file does not say which, so both readings are tried. The shapes decide where
  they differ (in a bottleneck ResNet-50 every stage after the first: the shortcut
  conv takes the block's input, 2x conv3's input channels; a basic block's conv2
  is 3x3), and one reading holds for the whole file, BNs included. Where both
  readings fit and they pair different layers (e.g. a network whose only
  projection blocks have conv3 and shortcut of one shape), the file is refused:
  guessing could swap a conv3 with its shortcut, or a bn3 with the shortcut's BN,
  silently.

Any difference in a layer's number of weights or shapes, a layer of the model with
no counterpart in the file, or a weighted layer of the file that fits nothing is a
WeightsError naming the layer, the expected and found shapes, and the file. The
only thing a file may lack by design is the classifier (Keras's `_notop` files);
the head then comes from the caller's freshly initialised variables.
"""
import dataclasses
import re

import numpy as np
from flax import traverse_util

from resnet_jax.errors import WeightsError
from resnet_jax.weights.keras_h5 import KerasLayer, KerasWeights

# Keras weight name -> (our collection, our variable name), per kind of layer.
ROLES = {
    'conv': {'kernel': ('params', 'kernel'), 'bias': ('params', 'bias')},
    'bn': {'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
           'moving_mean': ('batch_stats', 'mean'),
           'moving_variance': ('batch_stats', 'var')},
    'dense': {'kernel': ('params', 'kernel'), 'bias': ('params', 'bias')},
}
KIND_NAMES = {'conv': 'Conv2D', 'bn': 'BatchNormalization', 'dense': 'Dense'}
_BLOCK_RE = re.compile(r'stage(\d+)_block(\d+)')


@dataclasses.dataclass(frozen=True)
class ModelLayer:
  """One conv, BN or dense module of our model.

  Attributes:
    path: module path in the variables tree, e.g. ('stage1_block1', 'conv1').
    kind: 'conv', 'bn' or 'dense'.
    weights: Keras weight name -> expected shape, in Keras's order, e.g.
      {'kernel': (1, 1, 64, 64), 'bias': (64,)}.
  """
  path: tuple[str, ...]
  kind: str
  weights: dict[str, tuple[int, ...]]

  @property
  def label(self) -> str:
    return '/'.join(self.path)


def model_layers(template) -> list[ModelLayer]:
  """The conv/BN/dense modules of a variables tree, in the mapping's canonical order.

  Args:
    template: {'params', 'batch_stats'} of arrays or ShapeDtypeStructs.
  """
  modules = {}
  for collection in ('params', 'batch_stats'):
    flat = traverse_util.flatten_dict(template.get(collection, {}))
    for path, leaf in flat.items():
      modules.setdefault(path[:-1], {})[(collection, path[-1])] = tuple(leaf.shape)
  layers = []
  for path, variables in modules.items():
    for kind, roles in ROLES.items():
      wanted = {keras: variables.get(ours) for keras, ours in roles.items()}
      if kind == 'conv' and variables.get(('params', 'bias')) is None:
        wanted.pop('bias')  # Layouts without conv biases (torchvision).
      found = {k: s for k, s in wanted.items() if s is not None}
      kernel_rank = len(found.get('kernel', ()))
      if (len(found) == len(wanted) == len(variables)
          and (kind == 'bn' or kernel_rank == (4 if kind == 'conv' else 2))):
        layers.append(ModelLayer(path, kind, found))
        break
    else:
      raise WeightsError(
          f"model variables {'/'.join(path)} {sorted(variables)} are neither a conv, "
          'a BatchNorm nor a Dense; the Keras importer cannot fill them')
  return sorted(layers, key=lambda layer: _canonical_key(layer.path))


def _canonical_key(path):
  """stem, blocks by (stage, block), head; in a block conv1, bn1, conv2, ... proj_*."""
  top = path[0]
  if top.startswith('stem'):
    return (0, 0, 0, _leaf_key(path[0]), path)
  match = _BLOCK_RE.fullmatch(top)
  if match:
    return (1, int(match.group(1)), int(match.group(2)), _leaf_key(path[-1]), path)
  if top == 'head':
    return (3, 0, 0, (), path)
  return (2, 0, 0, (), path)


def _leaf_key(name):
  """conv1 < bn1 < conv2 < bn2 < ... < proj_conv < proj_bn (stem_conv < stem_bn)."""
  match = re.fullmatch(r'(?:(conv|bn)(\d+)|(?:proj|stem)_(conv|bn))', name)
  if not match:
    return (0, 0, name)
  kind = match.group(1) or match.group(3)
  number = int(match.group(2)) if match.group(2) else 99
  return (number, kind == 'bn', name)


def _block_parts(layer: ModelLayer):
  """(stage, block, 'conv'|'bn', index) of a block layer, index 0 for the shortcut."""
  if len(layer.path) != 2:
    return None
  match = _BLOCK_RE.fullmatch(layer.path[0])
  sub = re.fullmatch(r'(conv|bn)(\d+)|proj_(conv|bn)', layer.path[1])
  if not match or not sub:
    return None
  return (int(match.group(1)), int(match.group(2)), sub.group(1) or sub.group(3),
          int(sub.group(2) or 0))


def keras_applications_name(layer: ModelLayer) -> str | None:
  """Keras Applications' name of one of our conv/BN layers, e.g. 'conv2_block1_0_bn'."""
  if len(layer.path) == 1:
    return {'stem_conv': 'conv1_conv', 'stem_bn': 'conv1_bn',
            'post_bn': 'post_bn'}.get(layer.path[0])
  match = _BLOCK_RE.fullmatch(layer.path[0])
  if match and layer.path[1:] == ('preact_bn',):
    return f'conv{int(match.group(1)) + 1}_block{match.group(2)}_preact_bn'
  parts = _block_parts(layer)
  if parts is None:
    return None
  stage, block, kind, index = parts
  return f'conv{stage + 1}_block{block}_{index}_{kind}'


def caffe_style_name(layer: ModelLayer) -> str | None:
  """The Caffe-derived name of the first Keras ResNet50 and the 2018 course.

  'conv1', 'bn_conv1', then for our stage{s}_block{b} 'res{s+1}{letter}_branch2a'
  (main path: a, b, c) or '_branch1' (shortcut), BN 'bn{s+1}{letter}_branch...'.
  """
  if len(layer.path) == 1:
    return {'stem_conv': 'conv1', 'stem_bn': 'bn_conv1'}.get(layer.path[0])
  parts = _block_parts(layer)
  if parts is None or parts[1] > 26:
    return None
  stage, block, kind, index = parts
  branch = f'2{chr(ord("a") + index - 1)}' if index else '1'
  prefix = 'res' if kind == 'conv' else 'bn'
  return f'{prefix}{stage + 1}{chr(ord("a") + block - 1)}_branch{branch}'


# Layer naming schemes matched by name: (a name only that scheme uses, namer).
NAMING_SCHEMES = {
    'keras_applications': (
        re.compile(r'conv1_(conv|bn)|conv\d+_block\d+_(\d+_(conv|bn)|preact_bn)'),
        keras_applications_name),
    'caffe': (re.compile(r'bn_conv1|(res|bn)\d+[a-z]_branch(1|2[a-z])'),
              caffe_style_name),
}


def file_layer_kind(layer: KerasLayer) -> str | None:
  """'conv', 'bn' or 'dense' from the weights' ranks; None for anything else."""
  ranks = [a.ndim for a in layer.arrays]
  if ranks[0] == 4 and all(r == 1 for r in ranks[1:]):
    return 'conv'
  if ranks[0] == 2 and all(r == 1 for r in ranks[1:]):
    return 'dense'
  if all(r == 1 for r in ranks):
    return 'bn'
  return None


def naming_scheme(weights: KerasWeights) -> str | None:
  """The NAMING_SCHEMES entry the file's layer names follow; None: match by order."""
  for scheme, (pattern, _) in NAMING_SCHEMES.items():
    if any(pattern.fullmatch(name) for name in weights.layers):
      return scheme
  return None


def match_layers(weights: KerasWeights, layers: list[ModelLayer], *,
                 skip_head: bool = False) -> dict[tuple[str, ...], KerasLayer]:
  """Pairs our layers with the file's layers (rule in the module docstring).

  Returns:
    our module path -> the KerasLayer that fills it. Dense layers of ours are
    absent when the file has no classifier or skip_head is True.
  """
  scheme = naming_scheme(weights)
  if scheme is None:
    return _match_by_order(weights, layers, skip_head)
  return _match_by_name(weights, layers, skip_head, scheme)


def _match_by_name(weights, layers, skip_head, scheme):
  """Convs and BNs by their names under `scheme`; the head is the file's Dense layer."""
  namer = NAMING_SCHEMES[scheme][1]
  dense = [layer for layer in weights.layers.values() if file_layer_kind(layer) == 'dense']
  matched = {}
  used = {layer.name for layer in dense} if skip_head else set()
  for layer in layers:
    if layer.kind == 'dense':
      if skip_head or not dense:
        continue  # The head comes from init_variables.
      their = dense[0]
    else:
      name = namer(layer)
      if name is None:
        raise WeightsError(
            f'{weights.path} names its layers as {scheme}, which has no name for the '
            f"model's {layer.label}")
      if name not in weights.layers:
        raise WeightsError(
            f"{weights.path} has no layer '{name}' for the model's {layer.label}: "
            f'expected a {KIND_NAMES[layer.kind]} with weights '
            f'{describe(layer.weights)}, found none')
      their = weights.layers[name]
    _check_fits(weights, layer, their, '')
    matched[layer.path] = their
    used.add(their.name)
  extra = [name for name in weights.layers if name not in used]
  if extra:
    layer = weights.layers[extra[0]]
    raise WeightsError(
        f"{weights.path} has layer '{layer.name}' with weights "
        f'{describe(dict(zip(layer.weight_names, layer.shapes)))} that fits no '
        f'variable of the model ({len(extra)} such layers: {extra[:5]})')
  return matched


def _match_by_order(weights, layers, skip_head):
  """Pairs by order within each kind, under whichever reading of the order fits."""
  file_by_kind = {'conv': [], 'bn': [], 'dense': []}
  for layer in weights.layers.values():
    kind = file_layer_kind(layer)
    if kind is None:
      raise WeightsError(
          f"{weights.path} has layer '{layer.name}' with weights of shapes "
          f'{list(layer.shapes)}: not a Conv2D, BatchNormalization or Dense, so it '
          'fits no variable of the model')
    file_by_kind[kind].append(layer)
  if skip_head:
    file_by_kind['dense'] = []
  readings = {reading: _pair_in_order(weights, _writer_order(layers, reading),
                                      file_by_kind)
              for reading in ('shortcut last', 'shortcut first')}
  fits = {reading: matched for reading, (matched, error) in readings.items()
          if error is None}
  pairings = {reading: {path: their.name for path, their in matched.items()}
              for reading, matched in fits.items()}
  if len(fits) == 2 and pairings['shortcut last'] != pairings['shortcut first']:
    path = next(p for p, name in pairings['shortcut last'].items()
                if pairings['shortcut first'][p] != name)
    raise WeightsError(
        f"{weights.path}: its layer names ({', '.join(list(weights.layers)[:3])}, ...) "
        'do not say which layer is which, and its order fits the model both with '
        "each block's shortcut conv and BN listed after the block's last main conv "
        "and BN (as Keras writes the course's model) and before them (as it writes "
        "Keras Applications'); the two readings differ, e.g. at the model's "
        f"{'/'.join(path)}, so loading either could swap layers silently. Give the "
        "layers Keras Applications' names (conv2_block1_0_conv, ...), which are "
        'matched by name in every layout (a .weights.h5 file keeps them from Keras '
        '3.15 on, perhaps earlier)')
  if fits:
    return next(iter(fits.values()))
  # Neither fits: report the reading that paired more layers before its error.
  _, error = max(readings.values(), key=lambda attempt: len(attempt[0]))
  raise error


def _writer_order(layers, reading):
  """Our layers in the order a Keras writer lists them, under `reading`.

  'shortcut last' is our canonical order; 'shortcut first' moves each block's
  proj_conv (proj_bn) right before the block's last main conv (BN).
  """
  if reading == 'shortcut last':
    return list(layers)
  last_main = {}
  for layer in layers:
    parts = _block_parts(layer)
    if parts and parts[3]:
      last_main[parts[:3]] = max(last_main.get(parts[:3], 0), parts[3])
  position = {layer.path: index for index, layer in enumerate(layers)}
  for layer in layers:  # A shortcut layer goes just before its block's last main one.
    parts = _block_parts(layer)
    if parts and parts[3] == 0 and parts[:3] in last_main:
      stage, block, kind, _ = parts
      last = (f'stage{stage}_block{block}', f'{kind}{last_main[parts[:3]]}')
      position[layer.path] = position[last] - 0.5
  return sorted(layers, key=lambda layer: position[layer.path])


def _pair_in_order(weights, layers, file_by_kind):
  """(our path -> their layer, None) if every kind pairs up; else (pairs so far, error)."""
  matched = {}
  for kind, theirs in file_by_kind.items():
    ours = [layer for layer in layers if layer.kind == kind]
    if kind == 'dense' and not theirs:
      continue  # No classifier in the file (notop), or skipped.
    counts = (f'(the file has {len(theirs)} {KIND_NAMES[kind]} layers, the model '
              f'{len(ours)})')
    for position, (mine, their) in enumerate(zip(ours, theirs), start=1):
      try:
        _check_fits(weights, mine, their,
                    f' ({KIND_NAMES[kind]} number {position} in graph order; '
                    f'{counts[1:]}')
      except WeightsError as error:
        return matched, error
      matched[mine.path] = their
    if len(ours) > len(theirs):
      mine = ours[len(theirs)]
      return matched, WeightsError(
          f"{weights.path} has no layer for the model's {mine.label}: expected a "
          f'{KIND_NAMES[kind]} with weights {describe(mine.weights)}, found none '
          f'{counts}')
    if len(theirs) > len(ours):
      their = theirs[len(ours)]
      return matched, WeightsError(
          f"{weights.path} has layer '{their.name}' with weights "
          f'{describe(dict(zip(their.weight_names, their.shapes)))} that fits no '
          f'variable of the model {counts}')
  return matched, None


def _check_fits(weights, mine: ModelLayer, their: KerasLayer, context: str):
  """Raises WeightsError unless `their` weights have `mine`'s names and shapes."""
  try:
    arrays = weights_by_role(mine, their)
    fits = all(arrays[k].shape == shape for k, shape in mine.weights.items())
  except KeyError:
    fits = False
  if fits:
    return
  hint = ('; to start a new classifier pass skip_head=True and init_variables'
          if mine.kind == 'dense' else '')
  raise WeightsError(
      f"{weights.path}: layer '{their.name}'{context} does not fit the model's "
      f'{mine.label}: expected weights {describe(mine.weights)}, found '
      f'{describe(dict(zip(their.weight_names, their.shapes)))}{hint}')


def weights_by_role(mine: ModelLayer, their: KerasLayer) -> dict[str, np.ndarray]:
  """Keras weight name -> array; by name when the file names them, else by position."""
  if len(their.arrays) != len(mine.weights):
    raise KeyError('count')
  if set(their.weight_names) == set(mine.weights):
    return dict(zip(their.weight_names, their.arrays))
  if all(name.isdigit() for name in their.weight_names):
    return dict(zip(mine.weights, their.arrays))
  raise KeyError('names')


def describe(shapes: dict) -> str:
  return '[' + ', '.join(f'{k} {tuple(s)}' for k, s in shapes.items()) + ']'
