"""Users' image folders: listing them (ImageFolder layout) and reading one image as RGB.

The layout is ImageNet's and torchvision's ImageFolder:

  SRC/<class>/<image>                          one pool of images (a holdout is drawn later)
  SRC/train/<class>/<image> [+ SRC/val/<class>/<image>]    splits given by the folder

A class folder may hold subfolders; every image file under it belongs to the class. Image
files are recognised by extension, in any case (`IMAGE_EXTENSIONS`); other files and names
starting with '.' (`.DS_Store`, `._x.jpg`, `.ipynb_checkpoints`) are ignored, and so are the
folders operating systems leave behind (`JUNK_FOLDERS`: `__MACOSX` from a macOS zip,
`$RECYCLE.BIN`, `System Volume Information`, ...), at every level. Symbolic links
are followed; a link back to a folder above it (a loop) is skipped and reported. The order
is sorted by name at every level, so the same folder lists the same way on every machine.

`split_train_val` gives the train and val lists: the folder's, or a seeded, stratified
holdout. Reading (`decode_rgb`) and storing (`shrink_to_max_size`, `encode_jpeg`,
`stored_jpeg`) are small pure functions: `prepare_images` and the raw-folder mode of the
streaming pipeline decode with the same code. Every way an image file can be unusable
(undecodable, truncated, zero bytes, not an image, over Pillow's pixel limit) is one
`BadImageError` with the reason.
"""
import dataclasses
import hashlib
import io
import json
import os
import warnings
from typing import Mapping, Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps

from resnet_jax.errors import BadImageError, ConfigError, DatasetError

IMAGE_EXTENSIONS = frozenset({
    '.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.bmp', '.dib', '.gif', '.webp', '.tif',
    '.tiff', '.ppm', '.pgm', '.pbm', '.pnm', '.ico', '.tga'})
SPLIT_FOLDERS = ('train', 'val')
# Folders an OS or archiver adds, never a class (compared without case; dot-folders such as
# .Trashes, .Spotlight-V100 and .fseventsd are ignored as every dot-name is).
JUNK_FOLDERS = frozenset({'__macosx', '$recycle.bin', 'system volume information',
                          'lost+found'})
DEFAULT_VAL_FRACTION = 0.1  # Held out of a folder without val/ (see split_train_val).
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = '4:2:0'  # Pillow's default at this quality, fixed so that bytes never drift.
# Antialiased bicubic: as sharp as Lanczos to the eye at these scales, and a quarter faster;
# the resize is the largest cost of a conversion after decoding.
RESAMPLE = Image.Resampling.BICUBIC
# Transparent pixels become this colour: most transparent pictures (logos, cut-out products,
# icons) are drawn to be seen on a white page.
ALPHA_BACKGROUND = (255, 255, 255)
_ORIENTATION = ExifTags.Base.Orientation


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """A listed image folder.

  Attributes:
    root: the folder as given.
    classes: class names (folder names), sorted; a label is an index into it.
    splits: 'train' (and 'val' when SRC has a val folder) -> ((path, label), ...), paths
      joined onto `root`, in sorted order.
    skipped: (path, reason) of what the listing had to leave out (symlink loops, folders
      that cannot be read), for the converter's list of bad files.
  """
  root: str
  classes: tuple[str, ...]
  splits: Mapping[str, tuple[tuple[str, int], ...]]
  skipped: tuple[tuple[str, str], ...] = ()

  @property
  def has_val_folder(self) -> bool:
    return 'val' in self.splits


def is_image_name(name: str) -> bool:
  return not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_ignored_folder(name: str) -> bool:
  """Hidden (dot) folders and `JUNK_FOLDERS`: never a class, never searched for images."""
  return name.startswith('.') or name.casefold() in JUNK_FOLDERS


def list_image_folder(root: str) -> ImageFolder:
  """Lists `root` in ImageFolder layout (see the module docstring).

  Raises:
    DatasetError: `root` is not a folder or has no class folders; a class folder holds no
      image (named); there is only one class; SRC/train sits next to folders other than
      SRC/val, or SRC/val has no SRC/train; SRC/val has a class that SRC/train lacks.
  """
  if not os.path.isdir(root):
    what = 'does not exist' if not os.path.exists(root) else 'is not a directory'
    raise DatasetError(f'image folder {root!r} {what}; expected a directory of class folders')
  top = _subfolders(root)
  if 'train' in top:
    others = [name for name in top if name not in SPLIT_FOLDERS]
    if others:
      raise DatasetError(f'image folder {root!r} holds train/ next to {others[:5]}; expected '
                         'either class folders only (SRC/<class>/...) or train/ and val/ '
                         '(SRC/train/<class>/..., SRC/val/<class>/...)')
    split_roots = {name: os.path.join(root, name) for name in SPLIT_FOLDERS if name in top}
  elif 'val' in top:
    raise DatasetError(f'image folder {root!r} holds val/ but no train/; expected train/ next '
                       'to it, or class folders only')
  else:
    split_roots = {'train': root}
  skipped = []
  classes = tuple(_subfolders(split_roots['train']))
  _check_classes(split_roots['train'], classes)
  splits = {}
  for split, split_root in split_roots.items():
    above = tuple({_identity(root), _identity(split_root)})  # What a link may not lead back to.
    names = _subfolders(split_root)
    unknown = sorted(set(names) - set(classes))
    if unknown:
      raise DatasetError(f'{split_root!r} has class folders {unknown[:5]} that '
                         f'{split_roots["train"]!r} lacks; expected the classes {classes[:5]}...')
    examples = []
    for name in names:
      class_dir = os.path.join(split_root, name)
      paths = _image_files(class_dir, above, skipped)
      if not paths:
        raise DatasetError(f'class folder {class_dir!r} holds no image file; expected images '
                           f'with one of the extensions {sorted(IMAGE_EXTENSIONS)}')
      label = classes.index(name)
      examples.extend((path, label) for path in paths)
    splits[split] = tuple(examples)
  return ImageFolder(root, classes, splits, tuple(skipped))


def split_train_val(folder: ImageFolder, val_fraction: float | None = None,
                    seed: int = 0) -> dict[str, list[tuple[str, int]]]:
  """{'train': [(path, label), ...], 'val': [...]}: the folder's own splits when it has a val
  folder, else a seeded, stratified holdout of `val_fraction` of every class.

  Per class, round(n * val_fraction) images are held out, at least one when the class has
  two or more and never all of them; which ones is a pure function of (seed, label). Lists
  keep the listing's sorted order. `val_fraction` 0 gives {'train': [...]} alone.

  Raises:
    ConfigError: `val_fraction` outside [0, 1), or given for a folder that has val/.
  """
  if val_fraction is not None and not 0 <= val_fraction < 1:
    raise ConfigError(f'val_fraction={val_fraction!r}; expected a fraction in [0, 1)')
  if folder.has_val_folder:
    if val_fraction is not None:
      raise ConfigError(f'val_fraction={val_fraction} but {folder.root!r} has a val folder; '
                        'expected no val_fraction (the folder is the validation split)')
    return {split: list(examples) for split, examples in folder.splits.items()}
  fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
  if fraction == 0:
    return {'train': list(folder.splits['train'])}
  by_class = [[] for _ in folder.classes]
  for example in folder.splits['train']:
    by_class[example[1]].append(example)
  held = set()
  for label, examples in enumerate(by_class):
    count = min(max(round(len(examples) * fraction), 1 if len(examples) > 1 else 0),
                len(examples) - 1)
    order = np.random.default_rng([seed, label]).permutation(len(examples))
    held.update(examples[i][0] for i in order[:count])
  return {'train': [e for e in folder.splits['train'] if e[0] not in held],
          'val': [e for e in folder.splits['train'] if e[0] in held]}


def listing_identity(root: str, splits: Mapping[str, Sequence[tuple[str, int]]],
                     classes: Sequence[str]) -> str:
  """'sha256:' + a digest of what a folder's splits hold: the class names and, per split,
  each file's path relative to `root`, label, size and modification time. A file added,
  removed, changed or moved to another split (another holdout) changes it."""
  hasher = hashlib.sha256(json.dumps({'classes': list(classes)}).encode())
  for split in sorted(splits):
    hasher.update(f'\n[{split}]'.encode())
    hash_files(hasher, root, splits[split])
  return 'sha256:' + hasher.hexdigest()


def hash_files(hasher, root: str, examples: Sequence[tuple[str, int]]) -> None:
  """Adds to `hasher` each file's path relative to `root`, its label, size and modification
  time: what says that a listed file is still the one listed, without reading it."""
  for path, label in examples:
    try:
      stat = os.stat(path)
      found = f'{stat.st_size}:{stat.st_mtime_ns}'
    except OSError:
      found = 'unreadable'
    hasher.update(f'\n{os.path.relpath(path, root)}\0{label}\0{found}'.encode(
        'utf-8', 'surrogateescape'))


def _check_classes(folder: str, classes: tuple[str, ...]) -> None:
  if not classes:
    loose = sum(1 for entry in os.scandir(folder) if is_image_name(entry.name))
    found = f'{loose} images but no class folders' if loose else 'no class folders'
    raise DatasetError(f'image folder {folder!r} holds {found}; expected one folder of images '
                       'per class (SRC/<class>/<image>)')
  if len(classes) == 1:
    raise DatasetError(f'image folder {folder!r} holds one class folder ({classes[0]!r}); '
                       'expected two or more classes to tell apart')


def _subfolders(folder: str) -> list[str]:
  """Sorted names of the folders in `folder` (links to folders included), less the hidden
  and junk ones (`is_ignored_folder`)."""
  with os.scandir(folder) as entries:
    return sorted(entry.name for entry in entries
                  if not is_ignored_folder(entry.name) and entry.is_dir(follow_symlinks=True))


def _identity(folder: str) -> tuple[int, int]:
  stat = os.stat(folder)
  return stat.st_dev, stat.st_ino


def _image_files(folder: str, above: tuple, skipped: list) -> list[str]:
  """Image files under `folder`, depth first in sorted order.

  A folder reached again through a link (it is one of its own ancestors, or one of `above`)
  is a loop: skipped and noted in `skipped`.
  """
  found = []

  def walk(directory: str, ancestors: tuple) -> None:
    try:
      stat = os.stat(directory)
      with os.scandir(directory) as it:
        entries = sorted(it, key=lambda entry: entry.name)
    except OSError as error:
      skipped.append((directory, f'folder cannot be read ({error.strerror or error})'))
      return
    here = stat.st_dev, stat.st_ino
    if here in ancestors:
      skipped.append((directory, 'symbolic link loop: it leads back to a folder above it'))
      return
    for entry in entries:
      if entry.name.startswith('.'):
        continue
      try:
        is_dir = entry.is_dir(follow_symlinks=True)
      except OSError:  # A link that cannot be resolved is read (and reported) as a file.
        is_dir = False
      if is_dir:
        if not is_ignored_folder(entry.name):
          walk(entry.path, ancestors + (here,))
      elif is_image_name(entry.name):
        found.append(entry.path)

  walk(folder, above)
  return found


def decode_rgb(source, *, max_pixels: int | None = None,
               min_shorter_side: int | None = None) -> np.ndarray:
  """An image file (path or bytes) as uint8 [height, width, 3] RGB, as it is meant to be seen.

  `decode_rgb_image` as an array; see there.
  """
  return np.asarray(decode_rgb_image(source, max_pixels=max_pixels,
                                     min_shorter_side=min_shorter_side), np.uint8)


def decode_rgb_image(source, *, max_pixels: int | None = None,
                     min_shorter_side: int | None = None) -> Image.Image:
  """An image file (path or bytes) as an RGB Pillow image, as it is meant to be seen.

  EXIF orientation is applied. Grayscale, 1-bit, palette, CMYK, YCbCr and 16-bit images are
  converted to RGB (16-bit values scaled to 8 bits); transparency is composited over
  `ALPHA_BACKGROUND` (white). An animated image gives its first frame.

  Args:
    source: a path (str or os.PathLike) or the file's bytes.
    max_pixels: images with more pixels are refused (default: Pillow's
      `Image.MAX_IMAGE_PIXELS`, its decompression-bomb limit).
    min_shorter_side: a speed hint: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (by
      libjpeg, which is fast and smooth) as long as its shorter side stays at least this.

  Raises:
    BadImageError: the file cannot be opened, is empty, is not an image, is truncated or
      corrupt, or has more than `max_pixels` pixels; `reason` says which.
  """
  path = None if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
  limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
  try:
    if path is None:
      if not len(source):
        raise BadImageError(None, 'empty (0 bytes)')
      opened = io.BytesIO(source)
    else:
      if os.path.getsize(path) == 0:
        raise BadImageError(path, 'empty file (0 bytes)')
      opened = path
  except OSError as error:
    raise BadImageError(path, f'cannot be opened ({error.strerror or error})') from error
  try:
    with warnings.catch_warnings():
      # Over Pillow's limit Image.open only warns (twice over it, it raises): both are bad.
      # The size check below is the guard that counts (the warnings filter is process-wide,
      # so another thread may reset it); the filter keeps the warning off the terminal.
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      # Not a `with` block: the result may be this very image. Pillow closes a file it opened
      # once the pixels are loaded.
      image = Image.open(opened)
      try:
        width, height = image.size
        if limit is not None and width * height > limit:
          raise BadImageError(path, f'{width}x{height} = {width * height} pixels, over the '
                                    f'limit of {limit} (a decompression bomb?)')
        if min_shorter_side and image.format == 'JPEG':
          scale = min_shorter_side / min(width, height)
          if scale < 1:
            image.draft(None, (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
        image.load()
        return _to_rgb(_upright(image), path)
      except BaseException:
        image.close()
        raise
  except BadImageError:
    raise
  except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
    raise BadImageError(path, f'over Pillow\'s pixel limit ({error})') from error
  except Image.UnidentifiedImageError as error:
    raise BadImageError(path, 'not an image (no format Pillow reads recognises it)') from error
  except Exception as error:  # Pillow's decoders raise many types on malformed data.
    if 'truncated' in str(error).lower():
      raise BadImageError(path, f'truncated ({error})') from error
    raise BadImageError(path, f'cannot be decoded ({type(error).__name__}: {error})') from error


def _upright(image: Image.Image) -> Image.Image:
  """The image turned as its EXIF orientation says."""
  try:
    if image.getexif().get(_ORIENTATION, 1) == 1:
      return image  # Upright already (exif_transpose would return a copy).
    return ImageOps.exif_transpose(image)
  except Exception:  # Malformed EXIF: the pixels are fine, so keep them as stored.
    return image


def _to_rgb(image: Image.Image, path: str | None) -> Image.Image:
  mode = image.mode
  if mode == 'RGB':
    return image
  if mode in ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N'):
    # 16-bit grayscale (PNG, TIFF): scale 0..65535 to 0..255; convert('L') would clip.
    values = np.asarray(image).astype(np.float64)
    gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), 'RGB')
  if mode == 'P':
    image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
  elif mode in ('LA', 'La', 'PA', 'RGBa', 'RGBX'):
    image = image.convert('RGBA' if mode != 'RGBX' else 'RGB')
  elif mode != 'RGBA':
    try:
      image = image.convert('RGB')
    except ValueError as error:
      raise BadImageError(path, f'pixel mode {mode!r} cannot be converted to RGB') from error
  if image.mode == 'RGBA':
    background = Image.new('RGBA', image.size, ALPHA_BACKGROUND + (255,))
    image = Image.alpha_composite(background, image).convert('RGB')
  return image


def target_size(width: int, height: int, max_size: int) -> tuple[int, int]:
  """(width, height) with the shorter side at most `max_size`, aspect kept (rounded half up,
  in integers so that every machine agrees)."""
  if min(width, height) <= max_size:
    return width, height
  if width <= height:
    return max_size, max(1, (2 * height * max_size + width) // (2 * width))
  return max(1, (2 * width * max_size + height) // (2 * height)), max_size


def shrink_to_max_size(image: np.ndarray, max_size: int) -> np.ndarray:
  """uint8 [H, W, 3] with the shorter side at most `max_size` (bicubic; never enlarged)."""
  height, width = image.shape[:2]
  if target_size(width, height, max_size) == (width, height):
    return image
  return np.asarray(_shrunk(Image.fromarray(image), max_size), np.uint8)


def _shrunk(image: Image.Image, max_size: int) -> Image.Image:
  size = target_size(*image.size, max_size)
  return image if size == image.size else image.resize(size, RESAMPLE)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """uint8 [H, W, 3] as baseline JPEG bytes; the same pixels always give the same bytes."""
  return _jpeg(Image.fromarray(image, 'RGB'), quality)


def _jpeg(image: Image.Image, quality: int) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', quality=quality, subsampling=JPEG_SUBSAMPLING, optimize=False,
             progressive=False)
  return buffer.getvalue()


def stored_jpeg(source, max_size: int, *, quality: int = JPEG_QUALITY,
                max_pixels: int | None = None) -> bytes:
  """An image file as a prepared dataset stores it: upright RGB, shorter side at most
  `max_size`, JPEG at `quality`; the same bytes as `encode_jpeg(shrink_to_max_size(
  decode_rgb(source, min_shorter_side=max_size), max_size))`, without the array copies.

  Raises BadImageError (see `decode_rgb_image`).
  """
  image = decode_rgb_image(source, max_pixels=max_pixels, min_shorter_side=max_size)
  return _jpeg(_shrunk(image, max_size), quality)
