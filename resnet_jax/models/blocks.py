"""Residual blocks: the course's identity and convolutional blocks, the bottleneck and the
basic block, each in any design of models/designs.py (the 2015 block, the 2016 paper's
pre-activation and the placements between).

Every block is usable on its own, `IdentityBlock(filters=(4, 4, 3), kernel_size=2)(x,
train=False)`, building its convs and batch norms from `layout`; inside a ResNet it
instead receives `conv` and `norm` partials configured once per model (as in Flax's
examples/imagenet). `train` only selects batch statistics (True) or the running
averages (False) in every BatchNorm.

`residual=False` gives the plain twin: the very same layers, without the skip addition
and without the projection branch. Every block runs through `_residual_block`: a design
or a shortcut option is data it reads, not a code path of its own.
"""
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.models.designs import (
  BN,
  SHORTCUTS,
  get_design,
  get_shortcut,
  shortcut_kind,
)
from resnet_jax.models.layouts import conv_and_norm, get_layout

ModuleDef = Any


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


def _apply_ops(ops, y, make_bn, bn_name):
  """`ops` (designs.BN / RELU) applied to `y` in order; a BN is `make_bn(bn_name)`."""
  for op in ops:
    y = make_bn(bn_name)(y) if op == BN else nn.relu(y)
  return y


def _residual_block(block, x, train: bool, branch, shortcut: str):
  """The one residual block every design and block type runs through.

  Args:
    block: the module (its fields: design, layout, residual, conv/norm partials...).
    x: the block's input.
    train: batch statistics (True) or running averages (False) in every BN.
    branch: [(features, kernel size, stride)] of the residual branch's convs,
      `conv1`, `conv2`, ...; BN -> ReLU between consecutive ones.
    shortcut: 'identity', 'zero_pad', 'projection' (conv -> BN) or 'conv' (bare conv);
      see designs.shortcut_kind.
  """
  design = get_design(block.design)
  layout, conv, norm = _factories(block)
  pre = design.preactivation
  last = len(branch)
  # The branch's last BN: zero-initialised, it makes the block start as the shortcut.
  last_bn = f'bn{last}' if BN in design.end else f'bn{last - 1}'
  last_init = _last_bn_init(block)

  def bn(name):
    return norm(use_running_average=not train, name=name,
                **({'scale_init': last_init} if name == last_bn else {}))

  y = _apply_ops(design.pre, x, bn, 'preact_bn')
  preact = y
  for i, (features, k, s) in enumerate(branch, start=1):
    if i > 1:
      y = nn.relu(bn(f'bn{i - 1}')(y))
    bn_follows = i < last or design.end[:1] == (BN,)
    y = conv(features, (k, k), strides=(s, s),
             padding='VALID' if k == 1 else layout.conv_padding(k, pre),
             use_bias=layout.has_conv_bias(pre, bn_follows), name=f'conv{i}')(y)
  y = _apply_ops(design.end, y, bn, f'bn{last}')
  if block.residual:
    option = get_shortcut(getattr(block, 'shortcut', 'projection'))
    features, strides = branch[-1][0], math.prod(s for _, _, s in branch)
    if shortcut == 'identity':
      short = x
    elif shortcut == 'zero_pad':
      short = _zero_pad_shortcut(x, features, strides)
    else:
      source = preact if pre else x
      short = conv(features, (1, 1), strides=(strides, strides), padding='VALID',
                   use_bias=layout.has_conv_bias(pre, shortcut == 'projection'),
                   name='proj_conv')(source)
      if shortcut == 'projection':
        short = norm(use_running_average=not train, name='proj_bn')(short)
    if option.scale != 1.0:
      y, short = option.scale * y, option.scale * short
    y = y + short
  return _apply_ops(design.post, y, bn, 'add_bn')


def _bottleneck_branch(block, strides: int):
  """[(features, kernel, stride)] of 1x1 F1 -> kxk F2 -> 1x1 F3, the stride placed as the
  layout says (first 1x1: v1; kxk: v1.5 and every pre-activation net)."""
  if len(block.filters) != 3:
    raise ConfigError(
        f'{type(block).__name__}.filters={tuple(block.filters)!r}; expected three '
        'filter counts (F1, F2, F3)')
  layout = get_layout(block.layout)
  f1, f2, f3 = block.filters
  in_1x1 = layout.stride_in_1x1 and not get_design(block.design).preactivation
  stride1, stride2 = (strides, 1) if in_1x1 else (1, strides)
  return [(f1, 1, stride1), (f2, block.kernel_size, stride2), (f3, 1, 1)]


class IdentityBlock(nn.Module):
  """The course's identity block: the shortcut is the input itself.

  Attributes:
    filters: (F1, F2, F3); F3 must equal the input's channels.
    kernel_size: size of the middle conv, padded 'same'.
    layout: a layout name or Layout (conv biases, BN constants, padding).
    kernel_init: conv kernel initializer; None means the layout's.
    residual: False drops the skip addition (the plain twin).
    dtype: compute dtype; parameters stay float32.
    zero_init_last_bn: initialise the branch's last BN scale (bn3) to zero.
    conv_impl: how the convs compute when built from the layout: 'auto', 'xla' or
      'matmul' (models/conv.py); the parameters are nn.Conv's either way.
    conv, norm: partials of nn.Conv / nn.BatchNorm; None builds them from the layout.
    design: where BN and ReLU sit (models/designs.py); 'original' is the course's.
    strides, shortcut, subsample_stride_only: for the blocks of a ResNet that do not open
      a stage. The shortcut is the input itself unless the shortcut option
      (designs.SHORTCUTS) puts a projection in every block, or the block is strided
      (Keras's ResNetV2: the last block of a stage), which projects (option B) or, with
      `subsample_stride_only`, subsamples the input (Keras's 1x1 max-pool).
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
  design: Any = 'original'
  strides: int = 1
  shortcut: str = 'projection'
  subsample_stride_only: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    if self.residual and x.shape[-1] != self.filters[-1]:
      raise ConfigError(
          f'IdentityBlock.filters[2]={self.filters[-1]} differs from the input\'s '
          f'{x.shape[-1]} channels; expected them equal (a shape-changing block is '
          'a ConvolutionalBlock)')
    kind = shortcut_kind(get_shortcut(self.shortcut), get_design(self.design), x.shape[-1],
                         self.filters[-1], self.strides, self.subsample_stride_only)
    return _residual_block(self, x, train, _bottleneck_branch(self, self.strides), kind)


class ConvolutionalBlock(nn.Module):
  """The course's convolutional block: strided bottleneck plus projection shortcut.

  The stride sits on the first 1x1 conv (coursera, keras layouts) or on the kxk conv
  (torchvision layout, and every pre-activation design). The shortcut is a strided 1x1
  conv F3 -> BN (a bare conv in full pre-activation), added before the last ReLU.
  Attributes as IdentityBlock, plus `strides`.
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
  design: Any = 'original'

  shortcut: str = 'projection'

  @nn.compact
  def __call__(self, x, train: bool):
    option, design = get_shortcut(self.shortcut), get_design(self.design)
    if option.everywhere is None:  # Every stage opens with a projection.
      kind = 'projection' if design.projection_bn else 'conv'
    else:
      kind = shortcut_kind(option, design, x.shape[-1], self.filters[-1], self.strides)
    return _residual_block(self, x, train, _bottleneck_branch(self, self.strides), kind)


class BasicBlock(nn.Module):
  """Two kxk convs (ResNet-18/34, the CIFAR nets of He et al. 2015, section 4.2).

  The stride sits on the first conv. The shortcut follows `shortcut`
  (designs.SHORTCUTS): where the block changes shape, a projection (strided 1x1 conv ->
  BN, the 2015 paper's option B) or 'zero_pad' (option A: the input subsampled with the
  stride, channels padded with zeros; no parameters); 'projection_all' (C),
  'conv_all' and 'scaled' as designs.py says. Attributes as IdentityBlock, with a
  single `filters` count, plus `strides`, `shortcut` and `subsample_stride_only` (as
  IdentityBlock's).
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
  design: Any = 'original'
  subsample_stride_only: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    if self.shortcut not in SHORTCUTS:
      raise ConfigError(
          f'BasicBlock.shortcut={self.shortcut!r}; expected one of {SHORTCUTS}')
    kind = shortcut_kind(get_shortcut(self.shortcut), get_design(self.design), x.shape[-1],
                         self.filters, self.strides, self.subsample_stride_only)
    k, s = self.kernel_size, self.strides
    return _residual_block(self, x, train, [(self.filters, k, s), (self.filters, k, 1)],
                           kind)


def _zero_pad_shortcut(x, features: int, strides: int):
  """Option A: subsample by the stride, pad the new channels with zeros (half each side)."""
  extra = features - x.shape[-1]
  if extra < 0:
    raise ConfigError(
        f"BasicBlock shortcut='zero_pad' cannot reduce {x.shape[-1]} channels to "
        f'{features}; expected filters >= the input channels')
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
