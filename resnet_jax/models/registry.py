"""Models by name: `create_model('resnet50', num_classes=6, layout='coursera')`.

The names, and what they say about a model (plain or residual, depth), are defined here only:

  resnet<d>, plain<d>              the ImageNet family, d in 18, 34, 50, 101, 152;
  cifar_resnet<d>, cifar_plain<d>  the CIFAR nets of He et al. 2015, section 4.2, of any depth
                                   d = 6n + 2 (n >= 1 blocks per stage): 8, 14, 20, 26, ...

MODEL_NAMES lists the names with an alias in resnet.py (CIFAR depths 20, 32, 44, 56, 110).
"""
import dataclasses
import numbers
import re

import flax.linen as nn

from resnet_jax.errors import ConfigError
from resnet_jax.models import resnet

_IMAGENET = {
    'resnet18': resnet.ResNet18,
    'resnet34': resnet.ResNet34,
    'resnet50': resnet.ResNet50,
    'resnet101': resnet.ResNet101,
    'resnet152': resnet.ResNet152,
    'plain18': resnet.Plain18,
    'plain34': resnet.Plain34,
    'plain50': resnet.Plain50,
    'plain101': resnet.Plain101,
    'plain152': resnet.Plain152,
}
# The CIFAR nets differ only in blocks per stage: one template each, the depth sets the rest.
_CIFAR = {True: resnet.ResNet20, False: resnet.Plain20}
_CIFAR_DEPTHS = (20, 32, 44, 56, 110)
MODEL_NAMES = tuple(_IMAGENET) + tuple(f'cifar_{kind}{depth}' for kind in ('resnet', 'plain')
                                       for depth in _CIFAR_DEPTHS)
NAME_GRAMMAR = "'cifar_resnet<d>' / 'cifar_plain<d>' with d = 6n + 2, n >= 1"
_NAME = re.compile(r'(cifar_)?(resnet|plain)([1-9]\d*)')
# Fields a caller may override; `parent` and `name` belong to Flax.
_FIELDS = tuple(f.name for f in dataclasses.fields(resnet.ResNet)
                if f.name not in ('parent', 'name'))


@dataclasses.dataclass(frozen=True)
class ModelName:
  """What a model name says: `family` 'imagenet' or 'cifar', plain or residual, depth."""
  name: str
  family: str
  residual: bool
  depth: int

  @property
  def kind(self) -> str:
    """'residual' or 'plain', as tables and figures of a sweep label it."""
    return 'residual' if self.residual else 'plain'


def parse_model_name(name: str) -> ModelName:
  """Reads a model name (see the module docstring); ConfigError naming it if it is none."""
  match = _NAME.fullmatch(name) if isinstance(name, str) else None
  if match:
    cifar, kind, depth = match.group(1), match.group(2), int(match.group(3))
    if not cifar and name in _IMAGENET:
      return ModelName(name, 'imagenet', kind == 'resnet', depth)
    if cifar and depth >= 8 and (depth - 2) % 6 == 0:
      return ModelName(name, 'cifar', kind == 'resnet', depth)
    if cifar:
      raise ConfigError(f'model name {name!r}: depth {depth} is not 6n + 2 with n >= 1; '
                        f'expected {NAME_GRAMMAR}, e.g. cifar_{kind}{6 * max(1, depth // 6) + 2}')
  raise ConfigError(f'model name {name!r} is unknown; expected one of {MODEL_NAMES} or '
                    f'{NAME_GRAMMAR}')


def is_model_name(name) -> bool:
  """True if `name` is a model create_model builds."""
  try:
    parse_model_name(name)
  except ConfigError:
    return False
  return True


def create_model(name: str, **overrides) -> nn.Module:
  """Builds a named model; `overrides` are ResNet fields (num_classes, layout, dtype...)."""
  parsed = parse_model_name(name)
  unknown = sorted(set(overrides) - set(_FIELDS))
  if unknown:
    raise ConfigError(
        f'model overrides {unknown} are not fields of ResNet; expected some of {_FIELDS}')
  if 'num_classes' in overrides:
    check_num_classes(overrides['num_classes'])
  if parsed.family == 'imagenet':
    return _IMAGENET[name](**overrides)
  blocks = (parsed.depth - 2) // 6
  return _CIFAR[parsed.residual](**{'stage_sizes': (blocks,) * 3, **overrides})


def check_num_classes(num_classes) -> None:
  """ConfigError unless `num_classes` is a positive int (a bool, 6.5 or '6' is none)."""
  integral = isinstance(num_classes, numbers.Integral) and not isinstance(num_classes, bool)
  if not integral or num_classes < 1:
    raise ConfigError(f'num_classes={num_classes!r} ({type(num_classes).__name__}); expected a '
                      'positive int, the number of classes the model predicts')


def check_input_size(model: nn.Module, image_size: int) -> None:
  """Raises ConfigError if `image_size` is too small for `model`.

  The last feature map must hold at least one pixel per side for every pixel the
  stem and the stages divide by (32 for ImageNet models, 4 for the CIFAR nets).
  """
  if not isinstance(model, resnet.ResNet):
    raise ConfigError(f'model is a {type(model).__name__}; expected a ResNet')
  need = model.downsampling
  if image_size < need:
    raise ConfigError(
        f'image_size={image_size} is too small for this {model.stem}-stem ResNet with '
        f'{len(model.stage_sizes)} stages, which downsamples by {need}; '
        f'expected image_size >= {need}')
