"""The Inception crop's resize on the device: boxes cut from the decoded images on the host
(resnet_jax.data.augment.crop_to_canvas) resized to size x size inside the train step, as
Pillow would.

The host sends each example as a fixed-size uint8 canvas holding its crop box plus a margin
of the surrounding image, and the box's geometry in the canvas (see `BOX_FIELDS`). This
module resizes every box to size x size with Pillow's BILINEAR filter as
`Image.resize(size, BILINEAR, box=...)` computes it, which is what the host path does: a
triangle filter stretched by the scale when shrinking (antialiased), its weights normalised
over the image's pixels (so the margin, where the image has one, takes part at the box's
edges), weights in Pillow's 22-bit fixed point, horizontal pass first, each pass rounded.
The weights are computed in integers, as exact as Pillow's float64 ones; the sums in float32
round differently from Pillow's 22-bit integers where a value falls within about 1e-5 of
a half, and Pillow 13 runs the vertical pass first for some boxes (its choice; older
versions always went horizontal first), rounding its intermediate image along the other
axis: so a pixel may differ from Pillow's by one grey level (tests/test_box_resize.py
states the tolerance).

Why not `jax.image.scale_and_translate`: it normalises over the whole input array (here the
canvas, whose unused part is not image) and does not round between its passes as Pillow
does; its dense weights are those used here.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

# The int32 geometry of a box in its canvas, one row per example: the box's top-left corner
# and size, the canvas rows and columns that hold image pixels (the rest is padding, weighted
# 0), and whether to flip the result left-right.
BOX_FIELDS = ('top', 'left', 'height', 'width', 'rows', 'cols', 'flip')
_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images (32 - 8 - 2).


def max_taps(canvas_size: int, size: int) -> int:
  """Input pixels one output pixel reads along an axis, for any box of a canvas: Pillow's
  kernel size, 2 * ceil(support) + 1 with the support the scale when shrinking, else 1."""
  return 2 * math.ceil(max(1.0, canvas_size / size)) + 1


def axis_taps(start, length, extent, size: int, taps: int):
  """(indices [B, size, taps] int32, fixed-point weights [B, size, taps] int32) of resizing
  pixels [start, start + length) of an axis of `extent` image pixels to `size` pixels, for
  each of B boxes (start, length, extent: int32 [B]).

  Pillow's precompute_coeffs: output pixel j is centred at start + (j + 0.5) * scale; its
  weights are the triangle filter at the input pixels' centres, stretched by the scale when
  shrinking, normalised over the pixels inside [0, extent) and rounded to 22-bit fixed point.
  """
  start, length, extent = (v[:, None, None] for v in (start, length, extent))
  # In integers, so that the weights are exact: with distances in units of 1 / (2 size),
  # input pixel i lies `twice` from output pixel j's centre, the triangle filter is 2 width
  # wide on each side (width: the scale, at least 1, times size), its value there is
  # (2 width - |twice|) / (2 width), and the normalisation cancels the denominator.
  j = jnp.arange(size, dtype=jnp.int32)[None, :, None]
  width = jnp.maximum(length, size)
  first = jnp.maximum(start + ((2 * j + 1) * length - 2 * width + size) // (2 * size), 0)
  indices = first + jnp.arange(taps, dtype=jnp.int32)
  twice = (2 * (indices - start) + 1) * size - (2 * j + 1) * length
  heights = jnp.where(indices < extent, jnp.maximum(2 * width - jnp.abs(twice), 0), 0)
  total = jnp.sum(heights, axis=-1, keepdims=True)
  # round(heights / total * 2^22), half up, without overflowing int32: 2^22 = q total + r.
  quotient, remainder = (1 << _PRECISION_BITS) // total, (1 << _PRECISION_BITS) % total
  fixed = heights * quotient + (2 * heights * remainder + total) // (2 * total)
  return jnp.minimum(indices, extent - 1), fixed


def axis_matrix(start, length, extent, size: int, side: int):
  """The weights of `axis_taps` as dense matrices [B, size, side] float32 (each entry an
  exact multiple of 2^-22, as Pillow's fixed point has it)."""
  indices, fixed = axis_taps(start, length, extent, size, max_taps(side, size))
  hits = (indices[..., None] == jnp.arange(side, dtype=jnp.int32)).astype(jnp.float32)
  return jnp.einsum('bstk,bst->bsk', hits, fixed.astype(jnp.float32) / (1 << _PRECISION_BITS))


def _round(pixels):
  """Pillow's rounding of a pass's result: half up, clipped to 0..255."""
  return jnp.clip(jnp.floor(pixels + 0.5), 0.0, 255.0)


def resize_boxes(canvases, boxes, size: int):
  """A batch of canvases [B, C, C, 3] uint8 and their boxes [B, 7] int32 (BOX_FIELDS) ->
  each box resized to [size, size, 3] uint8 and flipped left-right where its row says.

  Each pass is a batched matrix product with the dense weights (as
  jax.image.scale_and_translate computes), in float32 at full precision: accelerators do
  these fast, while XLA:CPU runs gathers of single pixels slowly. Horizontal pass first,
  rounded to integers between the passes, as Pillow does.
  """
  side = canvases.shape[1]
  top, left, height, width, rows, cols, flip = (boxes[:, i] for i in range(len(BOX_FIELDS)))
  across = axis_matrix(left, width, cols, size, side)  # [B, size, side]
  down = axis_matrix(top, height, rows, size, side)
  exact = jax.lax.Precision.HIGHEST  # Not TF32 or bfloat16: the sums must be exact to 1e-4.
  pixels = _round(jnp.einsum('bhwc,bjw->bhjc', canvases.astype(jnp.float32), across,
                             precision=exact))
  pixels = _round(jnp.einsum('bhjc,bih->bijc', pixels, down, precision=exact))
  pixels = jnp.where(flip[:, None, None, None] > 0, pixels[:, :, ::-1], pixels)
  return pixels.astype(jnp.uint8)


def box_array(rows: list) -> np.ndarray:
  """Geometry rows (tuples in BOX_FIELDS order) as the int32 array the step reads."""
  return np.asarray(rows, np.int32).reshape(-1, len(BOX_FIELDS))
