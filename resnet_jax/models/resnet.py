"""The ResNet family and its plain twins, as one generic linen module plus aliases.

Variable names are a contract (the weight importer relies on them): `stem_conv`,
`stem_bn`, blocks `stage{s}_block{b}` (s and b from 1; stage1 is Keras's "conv2"),
and the classifier `head`; the block design (models/designs.py) may drop `stem_bn` and
add a final `post_bn` (full pre-activation, Keras's ResNetV2 names). The model returns
logits in the compute dtype.
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.models.blocks import BasicBlock, ConvolutionalBlock, IdentityBlock
from resnet_jax.models.conv import CONV_IMPLS, cpu_formulations
from resnet_jax.models.designs import BN, DESIGN_NAMES, SHORTCUTS, get_design
from resnet_jax.models.layouts import conv_and_norm, get_layout
from resnet_jax.models.max_pool import sliced_max_pool

BLOCKS = ('bottleneck', 'basic')
STEMS = ('imagenet', 'cifar')


class ResNet(nn.Module):
  """A residual network (or its plain twin).

  Attributes:
    stage_sizes: blocks per stage.
    block: 'bottleneck' (first block of a stage a ConvolutionalBlock, the rest
      IdentityBlocks, filters (w, w, 4w)) or 'basic' (BasicBlocks of w filters).
    widths: base width w of each stage.
    stem: 'imagenet' (padded 7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool) or
      'cifar' (3x3 conv -> BN -> ReLU, He et al. 2015, section 4.2).
    stem_width: filters of the stem conv.
    num_classes: size of the logits.
    layout: a layout name or Layout; see layouts.py.
    residual: False gives the plain twin (no skips, no projection branches).
    shortcut: the shortcut option (models/designs.py): 'projection' (B), 'zero_pad' (A,
      basic blocks only), 'projection_all' (C), 'conv_all' or 'scaled'.
    design: where BN and ReLU sit in the blocks and around them (models/designs.py):
      'original' (the 2015 nets), 'full_preact' (He et al. 2016; Keras's ResNetV2), or a
      placement of the 2016 paper's Fig. 4 between them.
    kernel_size: size of the blocks' kxk convs.
    dtype: compute dtype; parameters are float32.
    kernel_init: initializer of every conv and the head; None means the layout's.
    frozen_bn: every BatchNorm uses (and keeps) its running statistics, even when
      train=True, e.g. to fine-tune on top of a frozen backbone.
    bn_axis_name: pmap/shard_map axis over which batch statistics are averaged
      (synchronised BN); None keeps them per device.
    zero_init_last_bn: initialise each block's last BN scale to zero.
    conv_impl: how every conv computes: 'auto' (matmul formulations on CPU for the
      shapes where they are faster, XLA's convolution elsewhere), 'xla' or 'matmul';
      see models/conv.py. Parameters are nn.Conv's whatever the choice. Batch norm's
      gradient and the stem's max pool follow it (conv.cpu_formulations).
  """
  stage_sizes: Sequence[int]
  block: str = 'bottleneck'
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  stem_width: int = 64
  num_classes: int = 1000
  layout: Any = 'coursera'
  residual: bool = True
  shortcut: str = 'projection'
  kernel_size: int = 3
  dtype: Any = jnp.float32
  kernel_init: Callable | None = None
  frozen_bn: bool = False
  bn_axis_name: str | None = None
  zero_init_last_bn: bool = False
  conv_impl: str = 'auto'
  design: str = 'original'

  def __post_init__(self):
    _check_choice('block', self.block, BLOCKS)
    _check_choice('stem', self.stem, STEMS)
    _check_choice('shortcut', self.shortcut, SHORTCUTS)
    _check_choice('conv_impl', self.conv_impl, CONV_IMPLS)
    _check_choice('design', self.design, DESIGN_NAMES)
    get_layout(self.layout)
    if self.block == 'bottleneck' and self.shortcut == 'zero_pad':
      raise ConfigError(
          f"ResNet.shortcut={self.shortcut!r} with block='bottleneck'; expected one of "
          f"{tuple(s for s in SHORTCUTS if s != 'zero_pad')} (bottleneck stages always "
          'open with a projection)')
    if len(self.widths) != len(self.stage_sizes):
      raise ConfigError(
          f'ResNet.widths has {len(self.widths)} entries and stage_sizes '
          f'{len(self.stage_sizes)}; expected one width per stage')
    super().__post_init__()

  @property
  def downsampling(self) -> int:
    """How many input pixels per pixel of the last feature map, per side."""
    stem = 4 if self.stem == 'imagenet' else 1
    return stem * 2 ** (len(self.stage_sizes) - 1)

  def _stage_strides(self, stage: int, block: int, size: int) -> int:
    """2 where the stage halves the resolution, else 1: on the first block of every stage
    but the first, or (pre-activation nets in a layout that says so: Keras's ResNetV2) on
    the last block of every stage but the last."""
    if get_design(self.design).preactivation and get_layout(self.layout).preact_stride_last:
      return 2 if stage < len(self.stage_sizes) and block == size else 1
    return 2 if stage > 1 and block == 1 else 1

  @nn.compact
  def __call__(self, x, train: bool):
    layout, design = get_layout(self.layout), get_design(self.design)
    conv, norm = conv_and_norm(layout, self.dtype, self.kernel_init,
                               self.bn_axis_name, self.conv_impl)
    bn_train = train and not self.frozen_bn
    x = jnp.asarray(x, self.dtype)

    stem_bias = layout.has_conv_bias(design.preactivation, design.stem[:1] == (BN,))
    if self.stem == 'imagenet':
      pad = layout.stem_padding
      x = conv(self.stem_width, (7, 7), strides=(2, 2), padding=((pad, pad), (pad, pad)),
               use_bias=stem_bias, name='stem_conv')(x)
    else:
      x = conv(self.stem_width, (3, 3), padding=layout.conv_padding(3, design.preactivation),
               use_bias=stem_bias, name='stem_conv')(x)
    for op in design.stem:
      x = norm(use_running_average=not bn_train, name='stem_bn')(x) if op == BN else nn.relu(x)
    if self.stem == 'imagenet':
      pad = ((0, 0), (layout.pool_padding,) * 2, (layout.pool_padding,) * 2, (0, 0))
      if not design.stem_relu:
        # Without a ReLU before it the map has negative values: pad with zeros, as
        # Keras's ZeroPadding2D (the -inf of max_pool's padding would differ).
        x = jnp.pad(x, pad)
      pool = sliced_max_pool if cpu_formulations(self.conv_impl) else nn.max_pool
      x = pool(x, (3, 3), strides=(2, 2), padding=pad[1:3] if design.stem_relu else 'VALID')

    common = dict(kernel_size=self.kernel_size, layout=layout, residual=self.residual,
                  dtype=self.dtype, zero_init_last_bn=self.zero_init_last_bn,
                  conv=conv, norm=norm, design=self.design, shortcut=self.shortcut)
    subsample = design.preactivation and layout.preact_stride_last
    for s, (size, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
      for b in range(1, size + 1):
        strides = self._stage_strides(s, b, size)
        name = f'stage{s}_block{b}'
        if self.block == 'basic':
          x = BasicBlock(width, strides=strides, subsample_stride_only=subsample, name=name,
                         **common)(x, bn_train)
        elif b == 1:  # Every bottleneck stage opens with a projection.
          x = ConvolutionalBlock((width, width, 4 * width), strides=strides, name=name,
                                 **common)(x, bn_train)
        else:
          x = IdentityBlock((width, width, 4 * width), strides=strides,
                            subsample_stride_only=subsample, name=name, **common)(x, bn_train)
    for op in design.final:
      x = norm(use_running_average=not bn_train, name='post_bn')(x) if op == BN else nn.relu(x)

    # Global average pooling; on the course's 64x64 input the last map is 2x2, so
    # this equals its AveragePooling2D((2, 2)) + Flatten.
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=self.kernel_init or layout.dense_init,
                    name='head')(x)


def _check_choice(field: str, value, choices):
  if value not in choices:
    raise ConfigError(f'ResNet.{field}={value!r}; expected one of {choices}')


# ImageNet family (He et al. 2015, Table 1).
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block='basic')
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block='basic')
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3))
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3))

# CIFAR family (He et al. 2015, section 4.2): depth 6n + 2, option-A shortcuts; any depth
# by name through the registry (cifar_resnet<6n+2>).
# No conv biases (every conv is followed by BN), hence the torchvision layout.
_CifarResNet = functools.partial(
    ResNet, block='basic', widths=(16, 32, 64), stem='cifar', stem_width=16,
    num_classes=10, shortcut='zero_pad', layout='torchvision')
ResNet20 = functools.partial(_CifarResNet, stage_sizes=(3, 3, 3))
ResNet32 = functools.partial(_CifarResNet, stage_sizes=(5, 5, 5))
ResNet44 = functools.partial(_CifarResNet, stage_sizes=(7, 7, 7))
ResNet56 = functools.partial(_CifarResNet, stage_sizes=(9, 9, 9))
ResNet110 = functools.partial(_CifarResNet, stage_sizes=(18, 18, 18))

# Plain twins: the same layers without skips or projections.
Plain18 = functools.partial(ResNet18, residual=False)
Plain34 = functools.partial(ResNet34, residual=False)
Plain50 = functools.partial(ResNet50, residual=False)
Plain101 = functools.partial(ResNet101, residual=False)
Plain152 = functools.partial(ResNet152, residual=False)
Plain20 = functools.partial(ResNet20, residual=False)
Plain32 = functools.partial(ResNet32, residual=False)
Plain44 = functools.partial(ResNet44, residual=False)
Plain56 = functools.partial(ResNet56, residual=False)
Plain110 = functools.partial(ResNet110, residual=False)

# Pre-activation family (He et al. 2016) in Keras Applications' layout: ResNet50V2,
# ResNet101V2, ResNet152V2 (the stride on the last block of a stage, see layouts.py).
ResNet50V2 = functools.partial(ResNet50, design='full_preact', layout='keras')
ResNet101V2 = functools.partial(ResNet101, design='full_preact', layout='keras')
ResNet152V2 = functools.partial(ResNet152, design='full_preact', layout='keras')
Plain50V2 = functools.partial(ResNet50V2, residual=False)
Plain101V2 = functools.partial(ResNet101V2, residual=False)
Plain152V2 = functools.partial(ResNet152V2, residual=False)

# The CIFAR nets of He et al. 2016: basic blocks (depth 6n + 2, option A, as the 2015
# CIFAR nets) and, from ResNet-164 on, bottleneck blocks of widths 16/32/64 (x4 out,
# depth 9n + 2, projections where the shape changes, as the paper's code).
_CifarPreactResNet = functools.partial(_CifarResNet, design='full_preact')
_CifarPreactBottleneck = functools.partial(_CifarPreactResNet, block='bottleneck',
                                           shortcut='projection')
PreactResNet20 = functools.partial(_CifarPreactResNet, stage_sizes=(3, 3, 3))
PreactResNet110 = functools.partial(_CifarPreactResNet, stage_sizes=(18, 18, 18))
PreactResNet164 = functools.partial(_CifarPreactBottleneck, stage_sizes=(18, 18, 18))
PreactResNet1001 = functools.partial(_CifarPreactBottleneck, stage_sizes=(111, 111, 111))
PreactPlain20 = functools.partial(PreactResNet20, residual=False)
PreactPlain110 = functools.partial(PreactResNet110, residual=False)
PreactPlain164 = functools.partial(PreactResNet164, residual=False)
PreactPlain1001 = functools.partial(PreactResNet1001, residual=False)
