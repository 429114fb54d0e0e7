"""Max pooling as a maximum over strided slices, with its gradient written out: for CPU.

`flax.linen.max_pool` lowers to a reduce-window whose gradient XLA computes from the
argmax of every window: in ResNet-50's step at 64x64 on CPU the stem's 3x3/2 pool built
four int32 index maps of its input and a five-output reduce-window, a visible part of the
step's CPU time (BENCHMARKS.md, "What each change bought"). Here the forward pass is the
elementwise maximum of the kh * kw strided slices of the (padded) input, and the backward
pass sends each window's gradient to the first position in it (row-major) that holds the
maximum, as XLA's select-and-scatter does, through one strided placement per offset.

The values are max_pool's exactly; the gradient is too, up to the order in which the
windows that overlap on one position add their shares (last bits of float rounding).
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from resnet_jax.models import conv


def sliced_max_pool(x: jax.Array, window_shape: Sequence[int], strides: Sequence[int],
                    padding='VALID') -> jax.Array:
  """`nn.max_pool(x, window_shape, strides, padding)` for NHWC `x`; padding 'VALID',
  'SAME' or ((top, bottom), (left, right)) (padded with -inf, as max_pool pads)."""
  window, strides = tuple(window_shape), tuple(strides)
  pads = conv.explicit_padding(x.shape[1:3], window, strides, (1, 1), padding)
  return _pool(x, window, strides, tuple(tuple(p) for p in pads))


def _offsets(window):
  return [(i, j) for i in range(window[0]) for j in range(window[1])]


def _padded(x, pads):
  (top, bottom), (left, right) = pads
  low = jnp.array(-jnp.inf, x.dtype)
  return lax.pad(x, low, ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _pool(x, window, strides, pads):
  return _forward(x, window, strides, pads)[0]


def _forward(x, window, strides, pads):
  padded = _padded(x, pads)
  out_hw = conv.output_hw(x.shape[1:3], pads, window, strides)
  slices = [conv.window_offset_slice(padded, o, strides, out_hw) for o in _offsets(window)]
  out = functools.reduce(jnp.maximum, slices)
  return out, padded


def _pool_fwd(x, window, strides, pads):
  out, padded = _forward(x, window, strides, pads)
  return out, (padded, out)


def _pool_bwd(window, strides, pads, residuals, g):
  padded, out = residuals
  out_hw = out.shape[1:3]
  unclaimed = jnp.ones(out.shape, bool)
  grad = jnp.zeros(padded.shape, g.dtype)
  zero = jnp.array(0, g.dtype)
  for offset in _offsets(window):
    hit = unclaimed & (conv.window_offset_slice(padded, offset, strides, out_hw) == out)
    unclaimed = unclaimed & ~hit
    # Window (y, x)'s share lands at padded (y * sh + i, x * sw + j): the masked gradient
    # spread by interior padding and shifted by the offset.
    grad = grad + lax.pad(jnp.where(hit, g, zero), zero, _placement(offset, strides, out_hw,
                                                                     padded.shape))
  (top, bottom), (left, right) = pads
  return (lax.slice(grad, (0, top, left, 0),
                    (grad.shape[0], grad.shape[1] - bottom, grad.shape[2] - right,
                     grad.shape[3])),)


def _placement(offset, strides, out_hw, padded_shape):
  dims = [(0, 0, 0)]
  for start, stride, size, total in zip(offset, strides, out_hw, padded_shape[1:3]):
    span = (size - 1) * stride + 1
    dims.append((start, total - start - span, stride - 1))
  return dims + [(0, 0, 0)]


_pool.defvjp(_pool_fwd, _pool_bwd)
