"""What a phone camera adds to the synthetic SIGNS pictures: the wall, shadows, lens, sensor, JPEG.

The wall is a plain light surface lit unevenly (a gradient and a darker rim); the hand casts a
soft shadow on it, offset away from the light. The camera then blurs (focus and the downscaling
to 64 px), balances the white and exposes, adds sensor noise, and saves a JPEG. numpy and
Pillow only; every random draw comes from the generator passed in.
"""
import io

import numpy as np
from PIL import Image


def wall(colour, gradient, vignette, texture, size: int) -> np.ndarray:
  """Walls [B, H, W, 3]: `colour` [B, 3] scaled by a linear gradient `gradient` [B, 2]
  (change across the picture in x and y, y up), a darker rim of depth `vignette` [B], and
  `texture` [B, H, W], a multiplicative low-frequency pattern."""
  pix = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  x, y = pix[None, None, :], -pix[None, :, None]
  light = 1.0 + gradient[:, 0, None, None] * x + gradient[:, 1, None, None] * y
  light = light - vignette[:, None, None] * (x * x + y * y) * 2.0
  return colour[:, None, None, :] * (light * texture)[..., None]


def smooth_noise(rng: np.random.Generator, batch: int, size: int, cells: int) -> np.ndarray:
  """Low-frequency noise [B, size, size], about unit spread: random values on a grid of
  cells x cells, interpolated smoothly (quadratic B-spline weights) up to the picture."""
  coarse = rng.standard_normal((batch, cells + 2, cells + 2), dtype=np.float32)
  up = _spline_matrix(size, cells)
  field = up @ coarse @ up.T
  return field / max(float(field.std()), 1e-6)


def _spline_matrix(size: int, cells: int) -> np.ndarray:
  """[size, cells + 2]: each pixel's weights on the grid values around it."""
  position = (np.arange(size) + 0.5) / size * cells + 0.5  # In grid units, from the first.
  offset = position[:, None] - np.arange(cells + 2)[None, :]
  d = np.abs(offset)
  weights = np.where(d < 0.5, 0.75 - d * d, np.where(d < 1.5, 0.5 * (1.5 - d) ** 2, 0.0))
  return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def box_blur(image: np.ndarray, radius: int, axis: int) -> np.ndarray:
  """A moving average over 2 * radius + 1 pixels along `axis`, edges repeated."""
  n = image.shape[axis]
  padded = np.concatenate([image.take([0] * radius, axis), image,
                           image.take([n - 1] * radius, axis)], axis)
  total = np.cumsum(padded, axis=axis, dtype=np.float32)
  zero = np.zeros_like(image.take([0], axis))
  total = np.concatenate([zero, total], axis)
  width = 2 * radius + 1
  return (total.take(np.arange(width, width + n), axis) -
          total.take(np.arange(0, n), axis)) / width


def cast_shadow(coverage: np.ndarray, shift, softness, strength) -> np.ndarray:
  """Multipliers [B, H, W] for the wall: the hand's silhouette moved by `shift` [B, 2] pixels
  (x right, y up), blurred by a box of radius `softness` (int, per call) twice, darkening by
  up to `strength` [B]."""
  b, size, _ = coverage.shape
  moved = np.zeros_like(coverage)
  for i in range(b):
    dx, dy = int(round(float(shift[i, 0]))), int(round(float(-shift[i, 1])))
    src = coverage[i, max(0, -dy):size - max(0, dy), max(0, -dx):size - max(0, dx)]
    moved[i, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
  for _ in range(2):
    moved = box_blur(box_blur(moved, softness, 1), softness, 2)
  return 1.0 - strength[:, None, None] * moved


def gaussian_blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
  """Per-picture Gaussian blur of [B, H, W, C] with `sigma` [B] in pixels (5 taps, sigma <=
  about 1.5)."""
  s2 = np.maximum(sigma, 1e-3) ** 2
  taps = np.exp(-np.arange(3, dtype=np.float32)[None, :] ** 2 / (2 * s2[:, None]))
  taps /= taps[:, :1] + 2 * taps[:, 1:].sum(axis=1, keepdims=True)
  w = taps[:, :, None, None, None].astype(np.float32)
  for axis in (1, 2):
    n = images.shape[axis]
    padded = np.concatenate([images.take([0, 0], axis), images,
                             images.take([n - 1, n - 1], axis)], axis)
    shifted = lambda k: padded.take(np.arange(2 + k, 2 + k + n), axis)
    images = (w[:, 0] * images + w[:, 1] * (shifted(-1) + shifted(1)) +
              w[:, 2] * (shifted(-2) + shifted(2)))
  return images


def jpeg(images: np.ndarray, quality: np.ndarray) -> np.ndarray:
  """uint8 pictures [B, H, W, 3] saved as JPEG at `quality` [B] (int; 0 keeps the picture as
  it is) and read back."""
  out = images.copy()
  for i, q in enumerate(quality):
    if q <= 0:
      continue
    data = io.BytesIO()
    Image.fromarray(images[i]).save(data, format='JPEG', quality=int(q))
    data.seek(0)
    with Image.open(data) as decoded:
      out[i] = np.asarray(decoded.convert('RGB'))
  return out
