"""JPEG records decoded by libjpeg-turbo straight into an RGB array: the streaming
pipeline's decoder.

Pillow decodes a JPEG through its incremental decoder into 4 bytes a pixel, and an array of
it is one more copy; `simplejpeg` (a thin binding of libjpeg-turbo, the library Pillow
itself bundles) writes the 3-byte RGB rows in one pass: less CPU an image than Pillow
and the copy (BENCHMARKS.md, "Streaming input", change (4)), with the same pixels: both
run libjpeg-turbo's exact integer IDCT and smooth upsampling.

Only what needs nothing beyond libjpeg goes this way: a JPEG without an APP1 block (EXIF or
XMP, where Pillow finds an orientation to apply) that simplejpeg decodes without error or warning to
at most Pillow's pixel limit. Anything else (PNGs, EXIF, CMYK, damage, a bomb, no simplejpeg
installed: the GPU machine lacks it) takes `image_files.decode_rgb_image` as before, so the
result and every error are those of the Pillow path.
"""
from typing import Optional, Union

import numpy as np
from PIL import Image

from resnet_jax.data import image_files

try:
  import simplejpeg
except ImportError:  # An optional speed-up; Pillow decodes the same pixels.
  simplejpeg = None

_SOI, _SOS, _APP1 = 0xD8, 0xDA, 0xE1
_COLORSPACES = ('YCbCr', 'Gray', 'RGB')  # Those libjpeg turns into RGB as Pillow does.


def decode_rgb_fast(encoded: bytes, *, min_shorter_side: Optional[int] = None
                    ) -> Union[np.ndarray, Image.Image]:
  """The pixels `image_files.decode_rgb_image(encoded, ...)` gives: a uint8 [H, W, 3] array
  where libjpeg-turbo decoded them directly, else that function's Pillow image (each
  augment transform takes either). Raises its BadImageError for what it refuses.

  Args:
    min_shorter_side: as decode_rgb_image's; a JPEG it would shrink goes through Pillow.
  """
  pixels = _direct(encoded, min_shorter_side)
  if pixels is not None:
    return pixels
  return image_files.decode_rgb_image(encoded, min_shorter_side=min_shorter_side)


def _direct(encoded: bytes, min_shorter_side: Optional[int]) -> Optional[np.ndarray]:
  """The RGB array, or None where the Pillow path must decide."""
  if simplejpeg is None or not _plain_jpeg(encoded):
    return None
  try:
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(encoded)
    if colorspace not in _COLORSPACES:
      return None  # CMYK and YCCK: Pillow knows Adobe's inverted ink.
    limit = Image.MAX_IMAGE_PIXELS
    if (limit is not None and height * width > limit) or (
        min_shorter_side and min(height, width) > min_shorter_side):
      return None  # A bomb is refused, and a reduced-scale decode drafted, by the Pillow path.
    # strict: any libjpeg warning (corrupt data it would paper over) raises here, and the
    # Pillow path names the damage.
    return simplejpeg.decode_jpeg(encoded, colorspace='RGB', strict=True)
  except ValueError:
    return None


def _plain_jpeg(data: bytes) -> bool:
  """Whether `data` starts as a JPEG with no APP1 segment (EXIF, XMP) before its scan.

  Walks the marker segments up to the start of scan; a few steps for any JPEG.
  """
  if len(data) < 4 or data[0] != 0xFF or data[1] != _SOI:
    return False
  position = 2
  while position + 4 <= len(data):
    if data[position] != 0xFF:
      return False  # Not a marker where one must be: let Pillow judge the file.
    marker = data[position + 1]
    if marker == 0xFF:  # Fill byte before a marker.
      position += 1
      continue
    if marker == _SOS:
      return True
    if marker == _APP1:
      return False  # EXIF or XMP: either can carry an orientation Pillow applies.
    position += 2 + int.from_bytes(data[position + 2:position + 4], 'big')
  return False
