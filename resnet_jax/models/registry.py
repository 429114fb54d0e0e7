"""Models by name: `create_model('resnet50', num_classes=6, layout='coursera')`."""
import dataclasses

import flax.linen as nn

from resnet_jax.errors import ConfigError
from resnet_jax.models import resnet

_MODELS = {
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
    'cifar_resnet20': resnet.ResNet20,
    'cifar_resnet32': resnet.ResNet32,
    'cifar_resnet44': resnet.ResNet44,
    'cifar_resnet56': resnet.ResNet56,
    'cifar_resnet110': resnet.ResNet110,
    'cifar_plain20': resnet.Plain20,
    'cifar_plain32': resnet.Plain32,
    'cifar_plain44': resnet.Plain44,
    'cifar_plain56': resnet.Plain56,
    'cifar_plain110': resnet.Plain110,
}
MODEL_NAMES = tuple(_MODELS)
# Fields a caller may override; `parent` and `name` belong to Flax.
_FIELDS = tuple(f.name for f in dataclasses.fields(resnet.ResNet)
                if f.name not in ('parent', 'name'))


def create_model(name: str, **overrides) -> nn.Module:
  """Builds a named model; `overrides` are ResNet fields (num_classes, layout, dtype...)."""
  if name not in _MODELS:
    raise ConfigError(f'model name {name!r} is unknown; expected one of {MODEL_NAMES}')
  unknown = sorted(set(overrides) - set(_FIELDS))
  if unknown:
    raise ConfigError(
        f'model overrides {unknown} are not fields of ResNet; expected some of {_FIELDS}')
  return _MODELS[name](**overrides)


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
