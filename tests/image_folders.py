"""Small generated image folders (ImageFolder layout) and bad image files, for the data tests.

Each class is a shape in its own colour on a dark, noisy background at a random place and
size, so that a tiny network tells the classes apart in an epoch or two; files alternate
between JPEG and PNG. Everything is a pure function of the seed: the same call writes the
same bytes.

  write_image_folder(tmp_path / 'src', per_class=50)            # src/<class>/<image>
  write_image_folder(tmp_path / 'src', per_class=40, val_per_class=10)  # src/train, src/val
  write_bad_images(tmp_path / 'src' / 'red_square')            # {file name: what is wrong}
"""
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

# Sorted, as the class list of a prepared dataset is.
CLASSES = ('blue_disc', 'green_bars', 'red_square', 'yellow_cross')
COLOURS = {'blue_disc': (40, 80, 230), 'green_bars': (40, 210, 60),
            'red_square': (230, 40, 40), 'yellow_cross': (230, 220, 40)}


def class_image(name: str, rng: np.random.Generator, size: tuple[int, int] = (32, 24)
                ) -> np.ndarray:
  """uint8 [height, width, 3]: the class's shape in its colour over dark noise."""
  width, height = size
  image = rng.integers(0, 60, (height, width, 3)).astype(np.float64)
  extent = int(rng.integers(min(width, height) // 3, min(width, height) * 3 // 4 + 1))
  top = int(rng.integers(0, height - extent + 1))
  left = int(rng.integers(0, width - extent + 1))
  rows, cols = np.mgrid[0:extent, 0:extent]
  if name == 'blue_disc':
    mask = (rows - extent / 2 + 0.5) ** 2 + (cols - extent / 2 + 0.5) ** 2 <= (extent / 2) ** 2
  elif name == 'green_bars':
    mask = (rows // max(1, extent // 6)) % 2 == 0
  elif name == 'red_square':
    mask = np.ones((extent, extent), bool)
  else:
    third = max(1, extent // 3)
    mask = ((rows >= third) & (rows < extent - third)) | ((cols >= third) & (cols < extent - third))
  colour = np.asarray(COLOURS[name]) * rng.uniform(0.8, 1.0)
  patch = image[top:top + extent, left:left + extent]
  patch[mask] = colour
  return np.clip(image, 0, 255).astype(np.uint8)


def encoded(image: np.ndarray, fmt: str, **save_args) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, fmt, **save_args)
  return buffer.getvalue()


def write_image_folder(root, per_class: int = 20, classes=CLASSES, *, val_per_class: int = 0,
                       size: tuple[int, int] = (32, 24), formats=('jpg', 'png'),
                       seed: int = 0) -> dict:
  """Writes `root/<class>/<image>` (or, with `val_per_class`, root/train/... + root/val/...).

  Images are named `<class>_<i>.<format>`, the formats taken in turn ('jpg': JPEG of quality
  90, 'png'). Returns {split: [(path,
  label), ...]} in the listing's sorted order, labels indexing sorted(classes).
  """
  rng = np.random.default_rng(seed)
  classes = sorted(classes)
  counts = {'train': per_class} if not val_per_class else {'train': per_class,
                                                            'val': val_per_class}
  written = {}
  for split, count in counts.items():
    split_root = os.path.join(root, split) if val_per_class else os.fspath(root)
    written[split] = []
    for label, name in enumerate(classes):
      folder = os.path.join(split_root, name)
      os.makedirs(folder, exist_ok=True)
      paths = []
      for i in range(count):
        image = class_image(name, rng, size)
        extension = formats[i % len(formats)]
        path = os.path.join(folder, f'{name}_{i:04d}.{extension}')
        with open(path, 'wb') as f:
          f.write(encoded(image, 'JPEG', quality=90) if extension == 'jpg' else
                  encoded(image, 'PNG'))
        paths.append(path)
      written[split].extend((path, label) for path in sorted(paths))
  return written


def png_claiming_size(width: int, height: int) -> bytes:
  """A valid PNG header (signature + IHDR with a good CRC) that claims `width`x`height` RGB
  pixels, followed by a tiny, wrong IDAT: a decompression bomb's shape, in 60 bytes."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack(
        '>I', zlib.crc32(kind + data) & 0xffffffff)
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0'))
          + chunk(b'IEND', b''))


def write_bad_images(folder, seed: int = 1) -> dict:
  """Writes one file of each kind a converter must skip into `folder`.

  Returns {file name: a word the reason for skipping it contains}.
  """
  os.makedirs(folder, exist_ok=True)
  good = encoded(class_image(CLASSES[0], np.random.default_rng(seed), (48, 40)), 'JPEG')
  # The Huffman table overwritten: libjpeg reports a broken data stream.
  table = good.index(b'\xff\xc4')
  files = {
      'empty.jpg': (b'', 'empty'),
      'truncated.jpg': (good[:len(good) // 2], 'truncated'),
      'text.JPG': (b'this is a text file, not a picture\n', 'not an image'),
      'corrupt.jpeg': (good[:table + 4] + b'\xff' * 30 + good[table + 34:], 'cannot be decoded'),
      'bomb.png': (png_claiming_size(200_000, 200_000), 'pixel'),
  }
  for name, (data, _) in files.items():
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(data)
  return {name: word for name, (_, word) in files.items()}
