"""Models by name: `create_model('resnet50', num_classes=6, layout='coursera')`.

The names, and what they say about a model (plain or residual, depth), are defined here only:

  resnet<d>, plain<d>              the ImageNet family, d in 18, 34, 50, 101, 152;
  resnet<d>v2, plain<d>v2          its pre-activation version (He et al. 2016) in Keras
                                   Applications' ResNetV2 layout, d in 50, 101, 152;
  cifar_resnet<d>, cifar_plain<d>  the CIFAR nets of He et al. 2015, section 4.2, of any depth
                                   d = 6n + 2 (n >= 1 blocks per stage): 8, 14, 20, 26, ...
  cifar_preact_resnet<d>,          the pre-activation CIFAR nets of He et al. 2016: basic
  cifar_preact_plain<d>            blocks for d = 6n + 2 below 164 (20, 56, 110, ...),
                                   bottleneck blocks for d = 9n + 2 from 164 on (164, 1001),
                                   as the paper switches to bottlenecks at ResNet-164.

MODEL_NAMES lists names with an alias in resnet.py (CIFAR depths 20, 32, 44, 56, 110;
pre-activation CIFAR depths 20, 110, 164; ResNet-1001 is a name by the grammar).
"""
import dataclasses
import numbers
import re

import flax.linen as nn
import jax.numpy as jnp

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
    'resnet50v2': resnet.ResNet50V2,
    'resnet101v2': resnet.ResNet101V2,
    'resnet152v2': resnet.ResNet152V2,
    'plain50v2': resnet.Plain50V2,
    'plain101v2': resnet.Plain101V2,
    'plain152v2': resnet.Plain152V2,
}
# The CIFAR nets differ only in blocks per stage: one template each, the depth sets the rest.
# (preactivation, residual) -> the template; bottleneck pre-activation nets from depth 164.
_CIFAR = {(False, True): resnet.ResNet20, (False, False): resnet.Plain20,
          (True, True): resnet.PreactResNet20, (True, False): resnet.PreactPlain20}
_CIFAR_BOTTLENECK = {True: resnet.PreactResNet164, False: resnet.PreactPlain164}
_CIFAR_DEPTHS = (20, 32, 44, 56, 110)
_PREACT_DEPTHS = (20, 110, 164)  # and 1001 (by the grammar): too big to list
_PREACT_BOTTLENECK_FROM = 164
MODEL_NAMES = (tuple(_IMAGENET)
               + tuple(f'cifar_{kind}{depth}' for kind in ('resnet', 'plain')
                       for depth in _CIFAR_DEPTHS)
               + tuple(f'cifar_preact_{kind}{depth}' for kind in ('resnet', 'plain')
                       for depth in _PREACT_DEPTHS))
NAME_GRAMMAR = ("'cifar_resnet<d>' / 'cifar_plain<d>' with d = 6n + 2, n >= 1, or "
                "'cifar_preact_resnet<d>' / 'cifar_preact_plain<d>' with d = 6n + 2 below 164, "
                'd = 9n + 2 from 164 on')
_NAME = re.compile(r'(cifar_)?(preact_)?(resnet|plain)([1-9]\d*)(v2)?')
# Fields a caller may override; `parent` and `name` belong to Flax.
_FIELDS = tuple(f.name for f in dataclasses.fields(resnet.ResNet)
                if f.name not in ('parent', 'name'))


@dataclasses.dataclass(frozen=True)
class ModelName:
  """What a model name says: `family` 'imagenet' or 'cifar', plain or residual, depth, and
  whether its blocks are pre-activation ones (He et al. 2016)."""
  name: str
  family: str
  residual: bool
  depth: int
  preactivation: bool = False

  @property
  def kind(self) -> str:
    """'residual' or 'plain', as tables and figures of a sweep label it."""
    return 'residual' if self.residual else 'plain'


def parse_model_name(name: str) -> ModelName:
  """Reads a model name (see the module docstring); ConfigError naming it if it is none."""
  match = _NAME.fullmatch(name) if isinstance(name, str) else None
  if match:
    cifar, preact, kind, depth, v2 = match.groups()
    depth, residual = int(depth), kind == 'resnet'
    if not cifar and not preact and name in _IMAGENET:
      return ModelName(name, 'imagenet', residual, depth, bool(v2))
    if cifar and not v2:
      step = 9 if preact and depth >= _PREACT_BOTTLENECK_FROM else 6
      if depth >= 8 and (depth - 2) % step == 0:
        return ModelName(name, 'cifar', residual, depth, bool(preact))
      prefix = f'cifar_{preact or ""}{kind}'
      raise ConfigError(f'model name {name!r}: depth {depth} is not {step}n + 2 with n >= 1; '
                        f'expected {NAME_GRAMMAR}, e.g. '
                        f'{prefix}{step * max(1, depth // step) + 2}')
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
  if 'dtype' in overrides:
    check_dtype(overrides['dtype'])
  if parsed.family == 'imagenet':
    return _IMAGENET[name](**overrides)
  if parsed.preactivation and parsed.depth >= _PREACT_BOTTLENECK_FROM:
    template, blocks = _CIFAR_BOTTLENECK[parsed.residual], (parsed.depth - 2) // 9
  else:
    template = _CIFAR[(parsed.preactivation, parsed.residual)]
    blocks = (parsed.depth - 2) // 6
  return template(**{'stage_sizes': (blocks,) * 3, **overrides})


def check_num_classes(num_classes) -> None:
  """ConfigError unless `num_classes` is a positive int (a bool, 6.5 or '6' is none)."""
  integral = isinstance(num_classes, numbers.Integral) and not isinstance(num_classes, bool)
  if not integral or num_classes < 1:
    raise ConfigError(f'num_classes={num_classes!r} ({type(num_classes).__name__}); expected a '
                      'positive int, the number of classes the model predicts')


def check_dtype(dtype) -> None:
  """ConfigError unless `dtype` names a floating-point type (the compute precision)."""
  try:
    floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ConfigError(f'dtype={dtype!r}; expected a floating-point type such as float32 or '
                      'bfloat16 (the compute precision; parameters stay float32)')


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
