"""resnet_jax.data.direct_jpeg: libjpeg-turbo straight to an array gives Pillow's pixels, and
everything it does not take goes the Pillow path with its errors."""
import io

import numpy as np
import pytest
from image_folders import CLASSES, class_image, encoded, write_bad_images
from PIL import Image

from resnet_jax.data import direct_jpeg, image_files
from resnet_jax.errors import BadImageError

needs_simplejpeg = pytest.mark.skipif(direct_jpeg.simplejpeg is None,
                                      reason='simplejpeg is not installed (the Pillow path is)')


def _photo(seed: int, size=(61, 47)) -> np.ndarray:
  """A smooth picture with noise: a JPEG's every block differs (odd sizes: partial MCUs)."""
  rng = np.random.default_rng(seed)
  field = np.asarray(Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8))
                     .resize(size, Image.BICUBIC), np.float32)
  return np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, mode: str = 'RGB', **save_args) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(buffer, 'JPEG', **save_args)
  return buffer.getvalue()


JPEG_KINDS = {
    'prepared (4:2:0, quality 95)': dict(quality=95, subsampling='4:2:0'),
    '4:4:4': dict(quality=90, subsampling='4:4:4'),
    '4:2:2': dict(quality=75, subsampling='4:2:2'),
    'progressive': dict(quality=85, progressive=True),
    'optimized Huffman tables': dict(quality=80, optimize=True),
    'restart markers': dict(quality=90, restart_marker_blocks=2),
}


@needs_simplejpeg
@pytest.mark.parametrize('kind', JPEG_KINDS)
def test_direct_decoding_gives_pillows_pixels_as_an_array(kind):
  for seed in range(3):
    data = _jpeg(_photo(seed), **JPEG_KINDS[kind])
    fast = direct_jpeg.decode_rgb_fast(data)
    assert isinstance(fast, np.ndarray) and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, np.asarray(image_files.decode_rgb_image(data)))


@needs_simplejpeg
@pytest.mark.parametrize('kind, data', [
    ('grayscale', _jpeg(_photo(4), 'L', quality=90)),
    ('stored as RGB, not YCbCr', _jpeg(_photo(4), quality=90, keep_rgb=True,
                                       subsampling='4:4:4')),
])
def test_grayscale_and_rgb_jpegs_become_the_same_rgb(kind, data):
  fast = direct_jpeg.decode_rgb_fast(data)
  assert isinstance(fast, np.ndarray) and fast.shape == (47, 61, 3), kind
  np.testing.assert_array_equal(fast, np.asarray(image_files.decode_rgb_image(data)))


def _with_orientation(data: bytes, orientation: int) -> bytes:
  image = Image.open(io.BytesIO(data))
  exif = Image.Exif()
  exif[image_files._ORIENTATION] = orientation
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', quality=95, exif=exif)
  return buffer.getvalue()


def _with_xmp_orientation(data: bytes, orientation: int) -> bytes:
  xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
         b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
         b'tiff:Orientation="%d"/></rdf:RDF></x:xmpmeta>' % orientation)
  buffer = io.BytesIO()
  Image.open(io.BytesIO(data)).save(buffer, 'JPEG', quality=95, xmp=xmp)
  return buffer.getvalue()


@pytest.mark.parametrize('kind, data', [
    ('an EXIF orientation (turned by Pillow)', _with_orientation(_jpeg(_photo(5)), 6)),
    ('an XMP orientation (turned by Pillow too)', _with_xmp_orientation(_jpeg(_photo(5)), 6)),
    ('a PNG', encoded(_photo(6), 'PNG')),
    ('a CMYK JPEG', _jpeg(_photo(7), 'CMYK', quality=90)),
])
def test_what_libjpeg_alone_cannot_give_goes_the_pillow_way(kind, data):
  result = direct_jpeg.decode_rgb_fast(data)
  assert isinstance(result, Image.Image), kind
  np.testing.assert_array_equal(np.asarray(result),
                                np.asarray(image_files.decode_rgb_image(data)))


def test_an_app1_block_is_found_before_the_scan_and_only_there():
  plain = _jpeg(_photo(8))
  assert direct_jpeg._plain_jpeg(plain)
  assert not direct_jpeg._plain_jpeg(_with_orientation(plain, 1))
  assert not direct_jpeg._plain_jpeg(_with_xmp_orientation(plain, 1))
  rotated = Image.open(io.BytesIO(_with_xmp_orientation(plain, 6)))
  assert rotated.getexif().get(image_files._ORIENTATION) == 6  # Pillow does read it.
  assert not direct_jpeg._plain_jpeg(b'\x89PNG\r\n\x1a\n')
  assert not direct_jpeg._plain_jpeg(plain[:4])  # Ends before any scan.


def test_a_jpeg_to_be_decoded_at_reduced_scale_goes_the_pillow_way():
  data = _jpeg(_photo(9, (128, 96)))
  drafted = direct_jpeg.decode_rgb_fast(data, min_shorter_side=40)
  assert isinstance(drafted, Image.Image) and drafted.size == (64, 48)  # Decoded at 1/2.
  kept = direct_jpeg.decode_rgb_fast(data, min_shorter_side=96)
  assert kept.shape[:2] == (96, 128) if isinstance(kept, np.ndarray) else kept.size == (128, 96)


def test_bad_files_get_the_pillow_paths_errors(tmp_path):
  reasons = write_bad_images(tmp_path)
  for name, word in reasons.items():
    data = (tmp_path / name).read_bytes()
    with pytest.raises(BadImageError) as fast:
      direct_jpeg.decode_rgb_fast(data)
    with pytest.raises(BadImageError) as pillow:
      image_files.decode_rgb_image(data)
    assert fast.value.reason == pillow.value.reason and word in fast.value.reason, name


@needs_simplejpeg
def test_a_jpeg_over_the_pixel_limit_is_refused_as_a_bomb(monkeypatch):
  data = _jpeg(_photo(10))
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 61 * 47 // 4)
  with pytest.raises(BadImageError, match='pixel'):
    direct_jpeg.decode_rgb_fast(data)


def test_without_simplejpeg_every_image_goes_the_pillow_way(monkeypatch):
  monkeypatch.setattr(direct_jpeg, 'simplejpeg', None)
  data = encoded(class_image(CLASSES[1], np.random.default_rng(0)), 'JPEG')
  result = direct_jpeg.decode_rgb_fast(data)
  assert isinstance(result, Image.Image)
  np.testing.assert_array_equal(np.asarray(result), image_files.decode_rgb(data))
