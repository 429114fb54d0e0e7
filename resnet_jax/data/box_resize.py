"""The Inception crop's resize on the device: boxes cut from the decoded images on the host
(host_augment.crop_to_canvas) resized to size x size inside the train step, as Pillow would.

The host sends each example as a fixed-size uint8 canvas holding its crop box plus a margin
of the surrounding image, and the box's geometry in the canvas (see `BOX_FIELDS`). This
module resizes every box to size x size with Pillow's BILINEAR filter as
`Image.resize(size, BILINEAR, box=...)` computes it, which is what the host path does: a
triangle filter stretched by the scale when shrinking (antialiased), its weights normalised
over the image's pixels (so the margin, where the image has one, takes part at the box's
edges), horizontal pass first, each pass in Pillow's 22-bit fixed point rounded to uint8.
The weights are computed in integers, as exact as Pillow's float64 ones, so where Pillow
runs its horizontal pass first the result equals Pillow's bit for bit. Pillow 13 runs the
vertical pass first for some boxes (its choice; older versions always went horizontal
first), rounding its intermediate image along the other axis: there a pixel may differ by
one grey level (tests/test_box_resize.py states the tolerance).

Why not `jax.image.scale_and_translate`: it normalises over the whole input array (here the
canvas, whose unused part is not image) and computes in float without Pillow's intermediate
rounding, and its dense weight matrices cost canvas x size multiply-adds per output pixel;
the few taps per pixel here (`2 * ceil(scale) + 1`) are gathered instead.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

# The int32 geometry of a box in its canvas, one row per example: the box's top-left corner
# and size, the canvas rows and columns that hold image pixels (the rest is padding, never
# read), and whether to flip the result left-right.
BOX_FIELDS = ('top', 'left', 'height', 'width', 'rows', 'cols', 'flip')
_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images (32 - 8 - 2).


def max_taps(canvas_size: int, size: int) -> int:
  """Input pixels one output pixel reads along an axis, for any box of a canvas: Pillow's
  kernel size, 2 * ceil(support) + 1 with the support the scale when shrinking, else 1."""
  return 2 * math.ceil(max(1.0, canvas_size / size)) + 1


def axis_taps(start, length, extent, size: int, taps: int):
  """(indices [size, taps] int32, fixed-point weights [size, taps] int32) of resizing
  pixels [start, start + length) of an axis of `extent` image pixels to `size` pixels.

  Pillow's precompute_coeffs: output pixel j is centred at start + (j + 0.5) * scale; its
  weights are the triangle filter at the input pixels' centres, stretched by the scale when
  shrinking, normalised over the pixels inside [0, extent) and rounded to 22-bit fixed point.
  """
  # In integers, so that the weights are exact: with distances in units of 1 / (2 size),
  # input pixel i lies `twice` from output pixel j's centre, the triangle filter is 2 width
  # wide on each side (width: the scale, at least 1, times size), its value there is
  # (2 width - |twice|) / (2 width), and the normalisation cancels the denominator.
  j = jnp.arange(size, dtype=jnp.int32)
  width = jnp.maximum(length, size)
  first = jnp.maximum(start + ((2 * j + 1) * length - 2 * width + size) // (2 * size), 0)
  indices = first[:, None] + jnp.arange(taps, dtype=jnp.int32)
  twice = (2 * (indices - start) + 1) * size - ((2 * j + 1) * length)[:, None]
  heights = jnp.where(indices < extent, jnp.maximum(2 * width - jnp.abs(twice), 0), 0)
  total = jnp.sum(heights, axis=1, keepdims=True)
  # round(heights / total * 2^22), half up, without overflowing int32: 2^22 = q total + r.
  quotient, remainder = (1 << _PRECISION_BITS) // total, (1 << _PRECISION_BITS) % total
  fixed = heights * quotient + (2 * heights * remainder + total) // (2 * total)
  return jnp.minimum(indices, extent - 1), fixed


def _pass(pixels, indices, weights, axis: int):
  """One resampling pass along `axis` of int32 pixels, rounded and clipped to 0..255."""
  gathered = jnp.take(pixels, indices, axis=axis)  # The axis becomes [size, taps].
  shape = [1] * gathered.ndim
  shape[axis], shape[axis + 1] = weights.shape
  total = jnp.sum(gathered * weights.reshape(shape), axis=axis + 1)
  return jnp.clip((total + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS, 0, 255)


def resize_box(canvas, box, size: int):
  """One canvas [C, C, 3] uint8 and its box geometry [7] -> the box resized to
  [size, size, 3] uint8 (flipped left-right where box[6] says)."""
  top, left, height, width, rows, cols, flip = (box[i] for i in range(len(BOX_FIELDS)))
  taps = max_taps(max(canvas.shape[:2]), size)
  x_indices, x_weights = axis_taps(left, width, cols, size, taps)
  y_indices, y_weights = axis_taps(top, height, rows, size, taps)
  pixels = canvas.astype(jnp.int32)
  pixels = _pass(pixels, x_indices, x_weights, axis=1)
  pixels = _pass(pixels, y_indices, y_weights, axis=0).astype(jnp.uint8)
  return jnp.where(flip > 0, pixels[:, ::-1], pixels)


def resize_boxes(canvases, boxes, size: int):
  """A batch of canvases [B, C, C, 3] uint8 and boxes [B, 7] int32 -> [B, size, size, 3]."""
  return jax.vmap(lambda c, b: resize_box(c, b, size))(canvases, boxes)


def box_array(rows: list) -> np.ndarray:
  """Geometry rows (tuples in BOX_FIELDS order) as the int32 array the step reads."""
  return np.asarray(rows, np.int32).reshape(-1, len(BOX_FIELDS))
