"""Convolution implementations, chosen by backend and shape, behind `nn.Conv`.

XLA:CPU runs some convolution shapes far below the machine's matmul speed: worst of all
a 3x3 'SAME' convolution on a 2x2 map (stage 5 of ResNet-50 at 64x64), and 1x1
convolutions slower than the same product written as a matmul. On CPU those shapes are
better written as matrix products, which XLA:CPU runs with its tuned GEMM:

- 'matmul' for 1x1 kernels: subsample by the stride, then one product over channels;
- 'im2col' for kxk kernels: pad, slice the input at each kernel offset (with the
  stride), stack the slices along channels, then one product with the kernel reshaped
  to [kh * kw * C, F]. (Nine separate shifted 1x1 products, summed, were tried: no
  faster on a 2x2 map, slower elsewhere.)

Both end in `channel_product`, whose gradient is written as two plain products: autodiff's
transposes the output gradient, and XLA:CPU materialised that transpose as a copy of each
batch norm's backward output.

The choice plugs into `nn.Conv` through its `conv_general_dilated` field, so the module,
its parameter names ('kernel', 'bias'), shapes, dtypes and initialisation (including the
RNG it consumes) are exactly nn.Conv's: checkpoints and imported Keras weights do not
care which implementation computed the output. Every formulation computes the same sums
as `lax.conv_general_dilated`, in another order (float rounding differs in the last
bits).

`conv_impl` names: 'xla' (always lax's convolution), 'matmul' (the matmul formulations
wherever they apply, whatever the backend), 'auto' (the measured choice: matmul
formulations on CPU for the shapes where they were faster, XLA elsewhere; see
`auto_choice`).

The measurements behind these choices: BENCHMARKS.md, "CPU speed: convolutions by shape"
and its table "What each change bought".
"""
import functools
from typing import Sequence

import jax
from jax import lax

from resnet_jax.errors import ConfigError

CONV_IMPLS = ('auto', 'xla', 'matmul')
# Below this many input channels XLA:CPU's kxk convolution is slow and 'im2col' (one
# product with k*k*C rows) wins: the stems on RGB input.
_IM2COL_MAX_CHANNELS = 16
# From this many input channels on maps no larger than this, im2col's one product beats
# XLA:CPU's convolution too (ResNet-50's stages 2-4 at 64x64).
_IM2COL_MIN_WIDE_CHANNELS = 64
_IM2COL_MAX_MAP = 16


def check_conv_impl(conv_impl: str) -> None:
  if conv_impl not in CONV_IMPLS:
    raise ConfigError(f'conv_impl={conv_impl!r}; expected one of {CONV_IMPLS}')


def conv_general_dilated_fn(conv_impl: str = 'auto'):
  """The `conv_general_dilated` that `nn.Conv` should use for `conv_impl`.

  Returns None for 'xla' (nn.Conv's default, `lax.conv_general_dilated`), so that a
  model built with 'xla' is the very module it was before this choice existed.
  """
  check_conv_impl(conv_impl)
  return _CONV_FNS[conv_impl]


def conv_general_dilated(lhs, rhs, window_strides, padding, *, conv_impl='auto',
                         **lax_options):
  """`lax.conv_general_dilated` with the formulation picked by `formulation_for`.

  Arguments as lax's (nn.Conv passes all but the first four by keyword: lhs_dilation,
  rhs_dilation, dimension_numbers, feature_group_count, precision,
  preferred_element_type); only NHWC/HWIO (nn.Conv's layout) and 2-D kernels take the
  matmul formulations, anything else goes to lax unchanged.
  """
  lax_conv = functools.partial(lax.conv_general_dilated, lhs, rhs, window_strides, padding,
                               **lax_options)
  lhs_dilation = lax_options.get('lhs_dilation')
  rhs_dilation = lax_options.get('rhs_dilation')
  dimension_numbers = lax_options.get('dimension_numbers')
  feature_group_count = lax_options.get('feature_group_count', 1)
  if (lhs.ndim != 4 or feature_group_count != 1 or _dilated(lhs_dilation)
      or not _is_nhwc_hwio(dimension_numbers, lhs.ndim)):
    return lax_conv()
  kh, kw = rhs.shape[:2]
  dilation = tuple(rhs_dilation or (1, 1))
  strides = tuple(window_strides)
  pads = explicit_padding(lhs.shape[1:3], (kh, kw), strides, dilation, padding)
  out_hw = output_hw(lhs.shape[1:3], pads, (kh, kw), strides, dilation)
  name = formulation_for(conv_impl, (kh, kw), lhs.shape[1:3], lhs.shape[3], pads)
  if name == 'xla' or min(out_hw) < 1:
    return lax_conv()
  kwargs = dict(precision=lax_options.get('precision'),
                preferred_element_type=lax_options.get('preferred_element_type'))
  if name == 'matmul':
    return matmul_1x1(lhs, rhs, strides, pads, **kwargs)
  return im2col(lhs, rhs, strides, pads, dilation, out_hw, **kwargs)


# One function object per choice, so that modules built with the same choice compare equal.
_CONV_FNS = {'xla': None,
             'auto': functools.partial(conv_general_dilated, conv_impl='auto'),
             'matmul': functools.partial(conv_general_dilated, conv_impl='matmul')}


def formulation_for(conv_impl: str, kernel_hw: Sequence[int], in_hw: Sequence[int],
                    in_channels: int, pads) -> str:
  """'xla', 'matmul' (1x1 kernels) or 'im2col' (kxk kernels) for one convolution."""
  if conv_impl == 'xla':
    return 'xla'
  pointwise = tuple(kernel_hw) == (1, 1) and all(lo <= 0 and hi <= 0 for lo, hi in pads)
  if conv_impl == 'auto' and not auto_choice(pointwise, kernel_hw, in_hw, in_channels):
    return 'xla'
  return 'matmul' if pointwise else 'im2col'


def auto_choice(pointwise: bool, kernel_hw: Sequence[int], in_hw: Sequence[int],
                in_channels: int) -> bool:
  """Whether 'auto' takes a matmul formulation: on CPU, for the shapes where it measured
  faster forward+backward, XLA's convolution everywhere else (BENCHMARKS.md, "CPU speed:
  convolutions by shape").

  On CPU: every 1x1 convolution; kxk kernels not smaller than the input map (a 3x3 on a
  2x2 map, XLA's slowest case); kxk kernels over few input channels, i.e. the stems; kxk
  kernels over 64 or more channels on maps of at most 16x16, ResNet-50's mid-size 3x3s at
  64x64 (decided on whole steps: such a convolution timed alone swings either way from
  run to run). The CIFAR nets' 3x3s over 16 and 32 channels on 16-32 px maps stay XLA's:
  slower as im2col alone, and no faster in whole steps.
  """
  if jax.default_backend() != 'cpu':
    return False
  if pointwise:
    return True
  covers_map = any(k >= size for k, size in zip(kernel_hw, in_hw))
  small_map_wide = in_channels >= _IM2COL_MIN_WIDE_CHANNELS and max(in_hw) <= _IM2COL_MAX_MAP
  return covers_map or in_channels < _IM2COL_MAX_CHANNELS or small_map_wide


def cpu_formulations(conv_impl: str) -> bool:
  """Whether a model takes the layers written out for XLA:CPU under `conv_impl`: batch
  norm's closed-form training gradient (models/batch_norm.py) and the max pool over strided
  slices (models/max_pool.py). With the matmul formulations, i.e. 'matmul', and 'auto' on
  CPU, where XLA runs autodiff's versions of those layers slowly; their
  parameters and forward values are the same either way."""
  check_conv_impl(conv_impl)
  return conv_impl == 'matmul' or (conv_impl == 'auto' and jax.default_backend() == 'cpu')


def matmul_1x1(lhs, rhs, strides, pads, *, precision=None, preferred_element_type=None):
  """A 1x1 convolution (padding <= 0, i.e. only cropping) as one product over channels."""
  x = _crop(lhs, pads)
  x = x[:, ::strides[0], ::strides[1], :]
  return channel_product(x, rhs[0, 0], precision, preferred_element_type)


def im2col(lhs, rhs, strides, pads, dilation, out_hw, *, precision=None,
           preferred_element_type=None):
  """A kxk convolution as one product: the input padded, sliced at each kernel offset
  (with the stride), the slices stacked along channels, times the kernel reshaped to
  [kh * kw * C, F]."""
  kh, kw, c, f = rhs.shape
  (top, bottom), (left, right) = pads
  x = lax.pad(lhs, _zero(lhs), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
  columns = lax.concatenate([window_offset_slice(x, (i, j), strides, out_hw, dilation)
                             for i in range(kh) for j in range(kw)], 3)
  return channel_product(columns, rhs.reshape(kh * kw * c, f), precision,
                         preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def channel_product(x, kernel, precision=None, preferred_element_type=None):
  """x [..., K] times kernel [K, F] over the last axis: one product of x's rows.

  Its gradient is written as the two products themselves, each contracting the operands'
  natural axes (rows for the kernel's, F for the input's), with no transposes for XLA to
  place: autodiff's version transposes the output gradient, which XLA:CPU materialised as
  a transposed copy of each batch norm's backward output (BENCHMARKS.md, "What each
  change bought").
  """
  return _channel_product(x, kernel, precision, preferred_element_type)


def _channel_product(x, kernel, precision, preferred_element_type):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=preferred_element_type)


def _channel_product_fwd(x, kernel, precision, preferred_element_type):
  return _channel_product(x, kernel, precision, preferred_element_type), (x, kernel)


def _channel_product_bwd(precision, preferred_element_type, residuals, g):
  x, kernel = residuals
  rows = x.reshape(-1, x.shape[-1])
  g_rows = g.reshape(-1, g.shape[-1])
  dx = lax.dot_general(g_rows, kernel, (((1,), (1,)), ((), ())), precision=precision,
                       preferred_element_type=preferred_element_type)
  dkernel = lax.dot_general(rows, g_rows, (((0,), (0,)), ((), ())), precision=precision,
                            preferred_element_type=preferred_element_type)
  return dx.reshape(x.shape).astype(x.dtype), dkernel.astype(kernel.dtype)


channel_product.defvjp(_channel_product_fwd, _channel_product_bwd)


def output_hw(in_hw, pads, kernel_hw, strides, dilation=(1, 1)) -> tuple[int, int]:
  """(height, width) of a window operation's output over an NHWC map padded by `pads`."""
  return tuple((size + lo + hi - (k - 1) * d - 1) // s + 1
               for size, (lo, hi), k, d, s in zip(in_hw, pads, kernel_hw, dilation, strides))


def window_offset_slice(padded, offset, strides, out_hw, dilation=(1, 1)):
  """What kernel offset (i, j) sees at every output position of a window operation over
  the (already padded) NHWC `padded`: [N, out_h, out_w, C]."""
  (i, j), (sh, sw), (dh, dw), (oh, ow) = offset, strides, dilation, out_hw
  return lax.slice(padded, (0, i * dh, j * dw, 0),
                   (padded.shape[0], i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1,
                    padded.shape[3]), (1, sh, sw, 1))


def _zero(x):
  return lax.convert_element_type(0, x.dtype)


def _crop(x, pads):
  """Applies non-positive padding (a crop) to H and W."""
  (top, bottom), (left, right) = pads
  if top == bottom == left == right == 0:
    return x
  return lax.pad(x, _zero(x), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))


def _dilated(dilation) -> bool:
  return dilation is not None and any(d != 1 for d in dilation)


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
  if dimension_numbers is None:
    return False  # lax's default is NCHW/OIHW.
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    numbers = dimension_numbers
  else:
    numbers = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  return (tuple(numbers.lhs_spec) == (0, 3, 1, 2) and tuple(numbers.rhs_spec) == (3, 2, 0, 1)
          and tuple(numbers.out_spec) == (0, 3, 1, 2))


def explicit_padding(in_hw, kernel_hw, strides, dilation, padding):
  """[(lo, hi), (lo, hi)] for H and W, from 'SAME'/'VALID'/explicit pairs as lax takes."""
  if isinstance(padding, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
    return [tuple(p) for p in lax.padtype_to_pads(in_hw, dilated, strides, padding)]
  return [tuple(p) for p in padding]
