"""Residual blocks: the course's identity and convolutional blocks, and the basic block.

Every block is usable on its own, `IdentityBlock(filters=(4, 4, 3), kernel_size=2)(x,
train=False)`, building its convs and batch norms from `layout`; inside a ResNet it
instead receives `conv` and `norm` partials configured once per model (as in Flax's
examples/imagenet). `train` only selects batch statistics (True) or the running
averages (False) in every BatchNorm.

`residual=False` gives the plain twin: the very same layers, without the skip addition
and without the projection branch.
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.models.layouts import conv_and_norm, get_layout

ModuleDef = Any
SHORTCUTS = ('projection', 'zero_pad')


def _factories(block):
  """The block's conv/norm partials: the model's if given, else the layout's."""
  layout = get_layout(block.layout)
  conv, norm = conv_and_norm(layout, block.dtype, block.kernel_init,
                             conv_impl=block.conv_impl)
  return layout, block.conv or conv, block.norm or norm


def _last_bn_init(block):
  # Zero-initialising the last BN scale makes each residual block start as the
  # identity (Goyal et al. 2017; torchvision's zero_init_residual).
  return nn.initializers.zeros if block.zero_init_last_bn else nn.initializers.ones


def _bottleneck_path(block, x, train: bool, strides: int):
  """1x1 F1 -> BN -> ReLU -> kxk F2 -> BN -> ReLU -> 1x1 F3 -> BN (no final ReLU)."""
  if len(block.filters) != 3:
    raise ConfigError(
        f'{type(block).__name__}.filters={tuple(block.filters)!r}; expected three '
        'filter counts (F1, F2, F3)')
  layout, conv, norm = _factories(block)
  f1, f2, f3 = block.filters
  k = block.kernel_size
  stride1, stride2 = (strides, 1) if layout.stride_in_1x1 else (1, strides)
  y = conv(f1, (1, 1), strides=(stride1, stride1), padding='VALID', name='conv1')(x)
  y = nn.relu(norm(use_running_average=not train, name='bn1')(y))
  y = conv(f2, (k, k), strides=(stride2, stride2), padding=layout.conv_padding(k),
           name='conv2')(y)
  y = nn.relu(norm(use_running_average=not train, name='bn2')(y))
  y = conv(f3, (1, 1), padding='VALID', name='conv3')(y)
  return norm(use_running_average=not train, scale_init=_last_bn_init(block),
              name='bn3')(y)


def _projection(block, x, train: bool, features: int, strides: int):
  """Shortcut of a block that changes shape: strided 1x1 conv -> BN."""
  _, conv, norm = _factories(block)
  x = conv(features, (1, 1), strides=(strides, strides), padding='VALID',
           name='proj_conv')(x)
  return norm(use_running_average=not train, name='proj_bn')(x)


class IdentityBlock(nn.Module):
  """The course's identity block: the shortcut is the input itself.

  Attributes:
    filters: (F1, F2, F3); F3 must equal the input's channels.
    kernel_size: size of the middle conv, padded 'same'.
    layout: a layout name or Layout (conv biases, BN constants, padding).
    kernel_init: conv kernel initializer; None means the layout's.
    residual: False drops the skip addition (the plain twin).
    dtype: compute dtype; parameters stay float32.
    zero_init_last_bn: initialise bn3's scale to zero.
    conv_impl: how the convs compute when built from the layout: 'auto', 'xla' or
      'matmul' (models/conv.py); the parameters are nn.Conv's either way.
    conv, norm: partials of nn.Conv / nn.BatchNorm; None builds them from the layout.
  """
  filters: Sequence[int]
  kernel_size: int = 3
  layout: Any = 'coursera'
  kernel_init: Callable | None = None
  residual: bool = True
  dtype: Any = jnp.float32
  zero_init_last_bn: bool = False
  conv_impl: str = 'auto'
  conv: ModuleDef | None = None
  norm: ModuleDef | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    if self.residual and x.shape[-1] != self.filters[-1]:
      raise ConfigError(
          f'IdentityBlock.filters[2]={self.filters[-1]} differs from the input\'s '
          f'{x.shape[-1]} channels; expected them equal (a shape-changing block is '
          'a ConvolutionalBlock)')
    y = _bottleneck_path(self, x, train, strides=1)
    if self.residual:
      y = y + x
    return nn.relu(y)


class ConvolutionalBlock(nn.Module):
  """The course's convolutional block: strided bottleneck plus projection shortcut.

  The stride sits on the first 1x1 conv (coursera, keras layouts) or on the kxk conv
  (torchvision layout). The shortcut is a strided 1x1 conv F3 -> BN, added before
  the last ReLU. Attributes as IdentityBlock, plus `strides`.
  """
  filters: Sequence[int]
  kernel_size: int = 3
  strides: int = 2
  layout: Any = 'coursera'
  kernel_init: Callable | None = None
  residual: bool = True
  dtype: Any = jnp.float32
  zero_init_last_bn: bool = False
  conv_impl: str = 'auto'
  conv: ModuleDef | None = None
  norm: ModuleDef | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    y = _bottleneck_path(self, x, train, strides=self.strides)
    if self.residual:
      y = y + _projection(self, x, train, self.filters[-1], self.strides)
    return nn.relu(y)


class BasicBlock(nn.Module):
  """Two kxk convs (ResNet-18/34, the CIFAR nets of He et al. 2015, section 4.2).

  The stride sits on the first conv. When the block changes shape, the shortcut is
  either a projection (strided 1x1 conv -> BN, the paper's option B) or 'zero_pad'
  (option A: the input subsampled with the stride, channels padded with zeros; no
  parameters). Attributes as IdentityBlock, with a single `filters` count, plus
  `strides` and `shortcut`.
  """
  filters: int
  kernel_size: int = 3
  strides: int = 1
  shortcut: str = 'projection'
  layout: Any = 'coursera'
  kernel_init: Callable | None = None
  residual: bool = True
  dtype: Any = jnp.float32
  zero_init_last_bn: bool = False
  conv_impl: str = 'auto'
  conv: ModuleDef | None = None
  norm: ModuleDef | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    if self.shortcut not in SHORTCUTS:
      raise ConfigError(
          f'BasicBlock.shortcut={self.shortcut!r}; expected one of {SHORTCUTS}')
    layout, conv, norm = _factories(self)
    k, s = self.kernel_size, self.strides
    y = conv(self.filters, (k, k), strides=(s, s), padding=layout.conv_padding(k),
             name='conv1')(x)
    y = nn.relu(norm(use_running_average=not train, name='bn1')(y))
    y = conv(self.filters, (k, k), padding=layout.conv_padding(k), name='conv2')(y)
    y = norm(use_running_average=not train, scale_init=_last_bn_init(self),
             name='bn2')(y)
    if not self.residual:
      return nn.relu(y)
    if s == 1 and x.shape[-1] == self.filters:
      shortcut = x
    elif self.shortcut == 'projection':
      shortcut = _projection(self, x, train, self.filters, s)
    else:
      shortcut = _zero_pad_shortcut(x, self.filters, s)
    return nn.relu(y + shortcut)


def _zero_pad_shortcut(x, features: int, strides: int):
  """Option A: subsample by the stride, pad the new channels with zeros (half each side)."""
  extra = features - x.shape[-1]
  if extra < 0:
    raise ConfigError(
        f"BasicBlock shortcut='zero_pad' cannot reduce {x.shape[-1]} channels to "
        f'{features}; expected filters >= the input channels')
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
