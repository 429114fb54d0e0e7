"""Layout presets: the per-reference details that make a ResNet equal to its reference.

A layout is data, not a code path. Blocks and models read its fields to decide conv
biases, batch-norm constants, where padding goes and how the ImageNet stem pads, so
that weights copied from the reference reproduce the reference's outputs.

Momentum follows the Flax convention, `ra = momentum * ra + (1 - momentum) * batch`,
which is also Keras's; PyTorch's `momentum=0.1` is Flax's 0.9.
"""
import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.models import batch_norm as batch_norm_lib, conv as conv_lib

Initializer = Callable[..., Any]

# PyTorch's kaiming_normal_(mode='fan_out', nonlinearity='relu'): an untruncated normal.
_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's nn.Linear weight init: uniform(+-1/sqrt(fan_in)).
_TORCH_LINEAR = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


@dataclasses.dataclass(frozen=True)
class Layout:
  """What distinguishes one reference implementation of ResNet from another.

  Attributes:
    name: the preset's name.
    conv_bias: whether convolutions have a bias (Keras: yes; torchvision: no).
    bn_epsilon: BatchNorm epsilon.
    bn_momentum: BatchNorm running-average momentum, Flax convention.
    stride_in_1x1: bottleneck stride on the first 1x1 conv (ResNet v1, Keras) rather
      than on the kxk conv (ResNet v1.5, torchvision).
    padding_convention: 'tf' pads a kxk conv as TF/Keras 'same' does (the odd extra
      pixel after, aligned to the stride; this is lax's 'SAME'); 'torch' pads k//2
      on both sides, as torchvision's explicit `padding=k//2`.
    stem_padding: zeros padded on each side before the 7x7/2 'VALID' stem conv.
    pool_padding: padding on each side before the 3x3/2 'VALID' stem max-pool. The
      pool pads with -inf; after the ReLU every window holds a value >= 0, so this
      equals Keras's ZeroPadding2D as well as PyTorch's -inf padding.
    conv_init: the reference's default conv kernel initializer.
    dense_init: the reference's default classifier kernel initializer.
    preact_stride_last: in pre-activation nets (models/designs.py), the stride sits on
      the last block of every stage but the last (Keras Applications' ResNetV2), not on
      the first block of every stage but the first; a block that then changes only the
      resolution subsamples its shortcut (Keras's 1x1 max-pool) under option B.
    preact_padding_convention: padding of the kxk convs of pre-activation nets; None:
      `padding_convention` (Keras's ResNetV2 pads 1 on each side before a 'valid' 3x3).
    preact_conv_bias: conv biases of pre-activation nets: 'all', 'none', or
      'unless_bn_follows' (Keras's ResNetV2: no bias on a conv that BN follows); None:
      'all' or 'none' as `conv_bias`.
  """
  name: str
  conv_bias: bool
  bn_epsilon: float
  bn_momentum: float
  stride_in_1x1: bool
  padding_convention: str
  stem_padding: int
  pool_padding: int
  conv_init: Initializer
  dense_init: Initializer
  preact_stride_last: bool = False
  preact_padding_convention: str | None = None
  preact_conv_bias: str | None = None

  def conv_padding(self, kernel_size: int, preactivation: bool = False):
    """Flax `padding` for a kxk conv that keeps the size at stride 1."""
    convention = self.padding_convention
    if preactivation and self.preact_padding_convention:
      convention = self.preact_padding_convention
    if convention == 'tf':
      return 'SAME'
    # Symmetric k//2 for odd k, as torchvision. Even kernels (never used by
    # torchvision) put the extra pixel at the end, so shapes still match.
    lo, hi = (kernel_size - 1) // 2, kernel_size // 2
    return ((lo, hi), (lo, hi))

  def has_conv_bias(self, preactivation: bool, bn_follows: bool) -> bool:
    """Whether a conv has a bias: the reference's rule for its kind of network."""
    if not preactivation:
      return self.conv_bias
    rule = self.preact_conv_bias or ('all' if self.conv_bias else 'none')
    return rule == 'all' or (rule == 'unless_bn_follows' and not bn_follows)


LAYOUTS = {
    # The course's Keras notebook: Keras defaults everywhere.
    'coursera': Layout(
        name='coursera', conv_bias=True, bn_epsilon=1e-3, bn_momentum=0.99,
        stride_in_1x1=True, padding_convention='tf', stem_padding=3,
        pool_padding=0, conv_init=nn.initializers.glorot_uniform(),
        dense_init=nn.initializers.glorot_uniform()),
    # keras.applications.ResNet50 (v1) and ResNet50V2 (pre-activation).
    'keras': Layout(
        name='keras', conv_bias=True, bn_epsilon=1.001e-5, bn_momentum=0.99,
        stride_in_1x1=True, padding_convention='tf', stem_padding=3,
        pool_padding=1, conv_init=nn.initializers.glorot_uniform(),
        dense_init=nn.initializers.glorot_uniform(), preact_stride_last=True,
        preact_padding_convention='torch', preact_conv_bias='unless_bn_follows'),
    # torchvision.models.resnet (v1.5).
    'torchvision': Layout(
        name='torchvision', conv_bias=False, bn_epsilon=1e-5, bn_momentum=0.9,
        stride_in_1x1=False, padding_convention='torch', stem_padding=3,
        pool_padding=1, conv_init=_KAIMING_FAN_OUT, dense_init=_TORCH_LINEAR),
}
LAYOUT_NAMES = tuple(LAYOUTS)


def get_layout(layout) -> Layout:
  """Returns the Layout for a preset name, or the Layout itself."""
  if isinstance(layout, Layout):
    return layout
  if layout not in LAYOUTS:
    raise ConfigError(
        f'layout={layout!r} is not a known layout; expected one of {LAYOUT_NAMES}')
  return LAYOUTS[layout]


def conv_and_norm(layout: Layout, dtype=jnp.float32, kernel_init=None,
                  bn_axis_name=None, conv_impl: str = 'auto'):
  """The `conv` and `norm` partials a model configures once for all its blocks.

  `conv` is always `nn.Conv` (its parameters are nn.Conv's whatever `conv_impl`);
  `conv_impl` only picks how it computes, see models/conv.py. It picks batch norm's
  training gradient by the same rule: 'xla' keeps nn.BatchNorm itself, 'matmul' takes the
  closed form of models/batch_norm.py, 'auto' takes it on CPU (same parameters and
  forward pass either way).

  `norm` still takes `use_running_average` (and optionally `scale_init`) per call.
  Variance is computed in two passes, as Keras and PyTorch do; the one-pass
  E[x^2] - E[x]^2 loses digits when the mean is large against the spread.
  """
  conv = functools.partial(
      nn.Conv, use_bias=layout.conv_bias, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=kernel_init or layout.conv_init,
      conv_general_dilated=conv_lib.conv_general_dilated_fn(conv_impl))
  closed_form = conv_lib.cpu_formulations(conv_impl)
  norm = functools.partial(
      batch_norm_lib.BatchNorm if closed_form else nn.BatchNorm,
      momentum=layout.bn_momentum, epsilon=layout.bn_epsilon,
      dtype=dtype, param_dtype=jnp.float32, axis_name=bn_axis_name,
      use_fast_variance=False)
  return conv, norm
