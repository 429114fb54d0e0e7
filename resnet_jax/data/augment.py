"""The host augmentation: every training recipe and its evaluation view, one image at a time.

`Augmentation` is a run's recipe; `train_view` makes one example's augmented image from the
example's own randomness (a numpy Generator, see pipeline.example_rng) and `eval_view` the
view evaluation scores, the one that matches the recipe:
- the small pictures' recipe (the course's): `resize_pad_crop`, the picture resized to
  size x size, zero-padded by `crop_padding` pixels per side and cropped back at a random
  offset; evaluated on the whole picture resized to size x size (`resize_square`);
- Inception's crop (`random_resized_crop`, Szegedy et al. 2015, as torchvision's
  RandomResizedCrop): a box of 8-100% of the area and aspect ratio 3/4-4/3, resized to
  size x size; evaluated on the centre crop (`center_crop`: the shorter side resized to
  size / 0.875, the central size x size).
A flip (left-right, probability 1/2) follows either where asked. Each function takes an RGB
image, a Pillow image or a uint8 array [H, W, 3], and returns a uint8 array [size, size, 3].

`crop_to_canvas` is the Inception crop without its resize: it draws the same box and flip
as `random_resized_crop` and copies the box's pixels, with the margin the resize reads
around it, into a fixed-size canvas; the train step resizes and flips on the device
(resnet_jax.train.box_resize), to what `random_resized_crop` gives.

Numpy and Pillow only: Grain's worker processes run this.
"""
import dataclasses
import math
from typing import Union

import numpy as np
from PIL import Image

RGBImage = Union[Image.Image, np.ndarray]

AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
CENTER_CROP_FRACTION = 0.875  # Evaluation keeps the central 87.5% (224 of 256).
_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """A run's training augmentation (see the module docstring).

  Attributes:
    inception_crop: Inception's random-resized crop; else resize, pad and crop.
    crop_padding: the pad-and-crop's padding in pixels per side (0: none).
    flip: a random left-right flip after the crop.
    canvas_size: with inception_crop, 0 resizes each box on the host; else the side of the
      canvas that carries the box to the device, which resizes it (`canvas_size`).
  """
  inception_crop: bool = False
  crop_padding: int = 0
  flip: bool = False
  canvas_size: int = 0

  def image_shape(self, size: int) -> tuple[int, int, int]:
    """The shape of the images a training batch carries."""
    side = self.canvas_size if self.inception_crop and self.canvas_size else size
    return (side, side, 3)

  def train_view(self, image: 'RGBImage', rng: np.random.Generator, size: int,
                 out: np.ndarray) -> tuple[int, ...]:
    """Writes the augmented `image` into `out` (zeros, of `image_shape(size)`); returns the
    box's geometry (box_resize's BOX_FIELDS) when `out` is a canvas, else ()."""
    if self.inception_crop and self.canvas_size:
      *geometry, heads = crop_to_canvas(image, rng, size, out)
      # The device flips; without flips the coin is tossed all the same (see _heads).
      return tuple(geometry) + (heads if self.flip else 0,)
    if self.inception_crop:
      out[...] = random_resized_crop(image, rng, size, self.flip)
    else:
      out[...] = resize_pad_crop(image, rng, size, self.crop_padding, self.flip)
    return ()

  def eval_view(self, image: 'RGBImage', size: int) -> np.ndarray:
    """The view of `image` that evaluation scores: what training sees, without randomness."""
    return center_crop(image, size) if self.inception_crop else resize_square(image, size)

  def eval_decode_side(self, size: int):
    """The shorter side a JPEG may be decoded down to for `eval_view` (None: full size)."""
    return resize_target(size) if self.inception_crop else None


def crop_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of one Inception crop of a width x height image.

  Ten tries at a random area and log-uniform aspect ratio; when none fits, the largest
  central box of the nearest allowed aspect ratio (torchvision's fallback).
  """
  area = width * height
  log_low, log_high = math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])
  for _ in range(_ATTEMPTS):
    target = area * rng.uniform(*AREA_RANGE)
    ratio = math.exp(rng.uniform(log_low, log_high))
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return left, top, left + w, top + h
  ratio = width / height
  if ratio < ASPECT_RANGE[0]:
    w, h = width, int(round(width / ASPECT_RANGE[0]))
  elif ratio > ASPECT_RANGE[1]:
    w, h = int(round(height * ASPECT_RANGE[1])), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def random_resized_crop(image: RGBImage, rng: np.random.Generator, size: int,
                        flip: bool) -> np.ndarray:
  """Inception's crop of `image` resized to size x size (bilinear), flipped at random."""
  image = _pillow(image)
  box = crop_box(rng, *image.size)
  # Resizing with a box crops and resizes in one pass, without an intermediate image.
  image = image.resize((size, size), Image.BILINEAR, box=box)
  if _heads(rng) and flip:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(image)


def canvas_size(max_size: int, size: int) -> int:
  """The side of a canvas that holds any Inception box of an image whose shorter side is at
  most `max_size`, with the margin its resize to `size` reads (and at least size x size)."""
  longest = math.ceil(max_size * ASPECT_RANGE[1]) + 1  # A box's side, rounding included.
  return max(size, longest + 2 * _margin(longest, size))


def crop_to_canvas(image: RGBImage, rng: np.random.Generator, size: int,
                   canvas: np.ndarray) -> tuple[int, ...]:
  """Draws an Inception box and the flip's coin as `random_resized_crop` does, writes the
  box and its margin into the top-left corner of `canvas` (zeros, [C, C, 3] uint8) and
  returns the geometry row box_resize reads (its BOX_FIELDS: top, left, height, width,
  rows, cols, flip).

  A box whose region does not fit the canvas (an image stored larger than its index says)
  is resized here, with Pillow, and sent as a size x size box that the device copies as is.
  """
  width, height = _size(image)
  left, top, right, bottom = crop_box(rng, width, height)
  flip = int(_heads(rng))
  margin_x, margin_y = _margin(right - left, size), _margin(bottom - top, size)
  x0, y0 = max(left - margin_x, 0), max(top - margin_y, 0)
  x1, y1 = min(right + margin_x, width), min(bottom + margin_y, height)
  if max(x1 - x0, y1 - y0) > min(canvas.shape[:2]):
    canvas[:size, :size] = np.asarray(_pillow(image).resize(
        (size, size), Image.BILINEAR, box=(left, top, right, bottom)))
    return (0, 0, size, size, size, size, flip)
  canvas[:y1 - y0, :x1 - x0] = np.asarray(image)[y0:y1, x0:x1]
  return (top - y0, left - x0, bottom - top, right - left, y1 - y0, x1 - x0, flip)


def _margin(length: int, size: int) -> int:
  """Pixels beyond a box's side of `length` that Pillow's bilinear resize to `size` reads:
  its filter's support, the scale when shrinking, else 1."""
  return math.ceil(max(1.0, length / size))


def resize_pad_crop(image: RGBImage, rng: np.random.Generator, size: int, padding: int,
                    flip: bool) -> np.ndarray:
  """`image` resized to size x size, then a random crop of its zero-padded copy and a flip."""
  pixels = resize_square(image, size)
  if padding:
    padded = np.pad(pixels, ((padding, padding), (padding, padding), (0, 0)))
    top, left = (int(v) for v in rng.integers(0, 2 * padding + 1, size=2))
    pixels = padded[top:top + size, left:left + size]
  return _maybe_flip(pixels, rng, flip)


def resize_square(image: RGBImage, size: int) -> np.ndarray:
  """`image` as a uint8 array [size, size, 3] (resized, bilinear, only if it is not so already)."""
  if _size(image) != (size, size):
    image = _pillow(image).resize((size, size), Image.BILINEAR)
  return np.asarray(image)


def center_crop(image: RGBImage, size: int) -> np.ndarray:
  """Evaluation's view: the shorter side resized to round(size / 0.875), the central size x size."""
  width, height = _size(image)
  short = resize_target(size)
  scale = short / min(width, height)
  new_w, new_h = max(size, int(round(width * scale))), max(size, int(round(height * scale)))
  image = _pillow(image).resize((new_w, new_h), Image.BILINEAR)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return np.asarray(image.crop((left, top, left + size, top + size)))


def resize_target(size: int) -> int:
  """The shorter side evaluation resizes to before its centre crop of `size`."""
  return int(round(size / CENTER_CROP_FRACTION))


def _size(image: RGBImage) -> tuple[int, int]:
  """(width, height), Pillow's order."""
  if isinstance(image, np.ndarray):
    return image.shape[1], image.shape[0]
  return image.size


def _pillow(image: RGBImage) -> Image.Image:
  return Image.fromarray(image, 'RGB') if isinstance(image, np.ndarray) else image


def _heads(rng: np.random.Generator) -> bool:
  """The flip's coin. It is tossed whether or not flips are on, so that turning them off
  changes nothing else an example draws."""
  return bool(rng.random() < 0.5)


def _maybe_flip(pixels: np.ndarray, rng: np.random.Generator, flip: bool) -> np.ndarray:
  return np.ascontiguousarray(pixels[:, ::-1]) if _heads(rng) and flip else pixels
