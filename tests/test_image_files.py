"""resnet_jax.data.image_files: listing ImageFolder layouts, reading any image as RGB, storing."""
import io
import os

import numpy as np
import pytest
from image_folders import (
  CLASSES,
  class_image,
  encoded,
  png_claiming_size,
  write_bad_images,
  write_image_folder,
)
from PIL import Image

from resnet_jax.data import image_files
from resnet_jax.data.image_files import (
  decode_rgb,
  encode_jpeg,
  list_image_folder,
  shrink_to_max_size,
  split_train_val,
  stored_jpeg,
  target_size,
)
from resnet_jax.errors import BadImageError, ConfigError, DatasetError


def test_a_flat_folder_lists_sorted_with_labels_from_sorted_class_names(tmp_path):
  written = write_image_folder(tmp_path, per_class=3)
  (tmp_path / 'red_square' / 'notes.txt').write_text('not an image')
  (tmp_path / 'red_square' / '._red_square_0000.jpg').write_bytes(b'macOS metadata')
  (tmp_path / 'red_square' / 'deeper').mkdir()
  (tmp_path / 'red_square' / 'deeper' / 'UPPER.JPEG').write_bytes(b'x')
  folder = list_image_folder(str(tmp_path))
  assert folder.classes == CLASSES and not folder.has_val_folder and folder.skipped == ()
  train = list(folder.splits['train'])
  deeper = (str(tmp_path / 'red_square' / 'deeper' / 'UPPER.JPEG'), 2)
  assert train == sorted(written['train'][:6]) + [deeper] + written['train'][6:]
  assert [label for _, label in train] == [0] * 3 + [1] * 3 + [2] * 4 + [3] * 3


@pytest.mark.parametrize('layout', ['flat', 'train_val'])
def test_os_junk_folders_are_skipped_like_junk_files(tmp_path, layout):
  # What a macOS zip (__MACOSX: a mirror of the tree of '._' files), a Windows or macOS
  # volume root (recycle bin, Spotlight, Trashes) and an ext4 mount root leave behind.
  written = write_image_folder(tmp_path, per_class=3, classes=CLASSES[:2],
                               val_per_class=2 if layout == 'train_val' else 0)
  junk = ['__MACOSX', '$RECYCLE.BIN', 'System Volume Information', '.Trashes',
          '.Spotlight-V100', '.fseventsd', 'lost+found']
  class_dir = tmp_path / ('train' if layout == 'train_val' else '') / CLASSES[0]
  for folder in [tmp_path / name for name in junk] + [class_dir / '__MACOSX',
                                                      tmp_path / '__MACOSX' / CLASSES[0]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / '._picture.jpg').write_bytes(b'macOS resource fork')
    (folder / 'picture.jpg').write_bytes(encoded(np.zeros((4, 4, 3), np.uint8), 'JPEG'))
  (tmp_path / '__macosx').mkdir()  # Any case (a zip made on Windows).
  folder = list_image_folder(str(tmp_path))
  assert folder.classes == CLASSES[:2] and folder.skipped == ()
  assert {split: list(examples) for split, examples in folder.splits.items()} == written


def test_train_and_val_folders_are_the_splits(tmp_path):
  written = write_image_folder(tmp_path, per_class=4, classes=CLASSES[:3], val_per_class=2)
  folder = list_image_folder(str(tmp_path))
  assert folder.classes == CLASSES[:3] and folder.has_val_folder
  assert {split: list(examples) for split, examples in folder.splits.items()} == written


def test_non_ascii_and_space_names_are_listed(tmp_path):
  for name in ('chat noir', 'çà et là 猫'):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'une image é.PNG').write_bytes(
        encoded(class_image(CLASSES[0], np.random.default_rng(0)), 'PNG'))
  folder = list_image_folder(str(tmp_path))
  assert folder.classes == ('chat noir', 'çà et là 猫')
  for path, _ in folder.splits['train']:
    assert decode_rgb(path).shape == (24, 32, 3)


def test_a_symlink_loop_is_skipped_and_named(tmp_path):
  write_image_folder(tmp_path, per_class=2, classes=CLASSES[:2])
  os.symlink('..', tmp_path / 'blue_disc' / 'up')
  os.symlink('.', tmp_path / 'green_bars' / 'here')
  os.symlink('self.jpg', tmp_path / 'green_bars' / 'self.jpg')  # A link to itself.
  folder = list_image_folder(str(tmp_path))
  assert len(folder.splits['train']) == 5
  assert [path for path, _ in folder.skipped] == [str(tmp_path / 'blue_disc' / 'up'),
                                                 str(tmp_path / 'green_bars' / 'here')]
  assert all('loop' in reason for _, reason in folder.skipped)
  with pytest.raises(BadImageError, match='cannot be opened'):
    decode_rgb(str(tmp_path / 'green_bars' / 'self.jpg'))


@pytest.mark.parametrize('make, message', [
    (lambda root: None, 'holds no class folders'),
    (lambda root: (root / 'x.jpg').write_bytes(b''), '1 images but no class folders'),
    (lambda root: write_image_folder(root, 2, CLASSES[:1]), r"one class folder \('blue_disc'\)"),
    (lambda root: (write_image_folder(root, 2, CLASSES[:2]), (root / 'empty class').mkdir(),
                   (root / 'empty class' / 'a.txt').write_text('')),
     "class folder '.*empty class' holds no image file"),
    (lambda root: (write_image_folder(root, 2, CLASSES[:2]), (root / 'train').mkdir()),
     r"train/ next to \['blue_disc', 'green_bars'\]"),
    (lambda root: (write_image_folder(root / 'val', 2, CLASSES[:2])), 'val/ but no train/'),
    (lambda root: (write_image_folder(root, 2, CLASSES[:2], val_per_class=1),
                   (root / 'val' / 'other').mkdir()), r"class folders \['other'\] that"),
])
def test_bad_folders_are_dataset_errors_that_say_what_is_wrong(tmp_path, make, message):
  make(tmp_path)
  with pytest.raises(DatasetError, match=message):
    list_image_folder(str(tmp_path))


def test_a_missing_folder_is_a_dataset_error(tmp_path):
  with pytest.raises(DatasetError, match='does not exist'):
    list_image_folder(str(tmp_path / 'nope'))


def test_every_bad_file_is_a_bad_image_error_with_its_reason(tmp_path):
  expected = write_bad_images(tmp_path)
  for name, word in expected.items():
    with pytest.raises(BadImageError) as raised:
      decode_rgb(str(tmp_path / name))
    assert word in raised.value.reason and raised.value.path == str(tmp_path / name)
    with open(tmp_path / name, 'rb') as f:  # The same from bytes.
      with pytest.raises(BadImageError, match=word):
        decode_rgb(f.read())


def test_the_pixel_limit_is_a_parameter_and_pillows_own_limit_counts_too(tmp_path):
  image = encoded(class_image(CLASSES[1], np.random.default_rng(0), (20, 10)), 'PNG')
  assert decode_rgb(image, max_pixels=200).shape == (10, 20, 3)
  with pytest.raises(BadImageError, match='200 pixels, over the limit of 199'):
    decode_rgb(image, max_pixels=199)
  # Between Pillow's limit and twice it, Pillow only warns: refused all the same.
  with pytest.raises(BadImageError, match='limit'):
    decode_rgb(png_claiming_size(10_000, 10_000), max_pixels=10**9)
  error = BadImageError('x.png', 'why')
  import pickle
  assert pickle.loads(pickle.dumps(error)).reason == 'why'


def _gradient(width=30, height=20):
  x = np.linspace(0, 255, width)[None, :, None]
  y = np.linspace(0, 255, height)[:, None, None]
  return np.concatenate([np.broadcast_to(x, (height, width, 1)),
                         np.broadcast_to(y, (height, width, 1)),
                         np.full((height, width, 1), 90.0)], 2).astype(np.uint8)


@pytest.mark.parametrize('orientation, turn', [
    (1, lambda a: a), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1)), (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied(orientation, turn):
  stored = _gradient()
  exif = Image.Exif()
  exif[0x0112] = orientation
  data = encoded(stored, 'PNG', exif=exif.tobytes())
  np.testing.assert_array_equal(decode_rgb(data), turn(stored))


def test_modes_become_rgb():
  rgb = _gradient()
  gray = rgb[..., 0]
  check = lambda data, want, tol=0: np.testing.assert_allclose(
      decode_rgb(data).astype(int), want.astype(int), atol=tol)
  check(encoded(gray, 'PNG'), np.stack([gray] * 3, -1))
  sixteen = gray.astype(np.uint16) * 257 + 100  # 16-bit gray: scaled, not clipped.
  data = encoded(sixteen, 'PNG')
  assert Image.open(io.BytesIO(data)).mode.startswith('I')
  check(data, np.stack([np.rint(sixteen / 257)] * 3, -1))
  palette = Image.fromarray(rgb).quantize(16)
  check(_save(palette, 'PNG'), np.asarray(palette.convert('RGB')))
  check(_save(Image.fromarray(rgb).convert('CMYK'), 'JPEG', quality=100), rgb, tol=8)
  check(_save(Image.fromarray(rgb).convert('CMYK'), 'TIFF'), rgb, tol=1)
  check(_save(Image.fromarray(gray).convert('1'), 'BMP'),
        np.stack([np.where(np.asarray(Image.fromarray(gray).convert('1')), 255, 0)] * 3, -1))


def test_transparency_is_composited_over_white():
  rgba = np.zeros((4, 6, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[..., 3] = np.array([0, 51, 102, 153, 204, 255])[None, :]
  want = np.empty((4, 6, 3))
  alpha = rgba[..., 3:] / 255
  want[...] = rgba[..., :3] * alpha + 255 * (1 - alpha)
  np.testing.assert_allclose(decode_rgb(encoded(rgba, 'PNG')), want, atol=1)
  assert image_files.ALPHA_BACKGROUND == (255, 255, 255)
  la = Image.fromarray(rgba[..., [0, 3]], 'LA')
  np.testing.assert_allclose(decode_rgb(_save(la, 'PNG'))[..., 0], want[..., 0], atol=1)
  # A palette with a transparent entry (GIF-style): transparent pixels are white.
  palette = Image.new('P', (3, 1))
  palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
  palette.putdata([0, 1, 0])
  decoded = decode_rgb(_save(palette, 'GIF', transparency=0))
  np.testing.assert_array_equal(decoded[0], [[255, 255, 255], [10, 20, 30], [255, 255, 255]])


def _save(image, fmt, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def test_target_size_keeps_the_aspect_and_never_enlarges():
  assert target_size(400, 300, 256) == (341, 256)
  assert target_size(300, 400, 256) == (256, 341)
  assert target_size(1000, 1000, 256) == (256, 256)
  assert target_size(200, 100, 256) == (200, 100)
  assert target_size(10_000, 2, 1) == (5000, 1)


def test_shrink_and_encode_are_deterministic_and_close_to_the_picture():
  big = np.asarray(Image.fromarray(_gradient(30, 20)).resize((300, 200)))
  small = shrink_to_max_size(big, 50)
  assert small.shape == (50, 75, 3) and shrink_to_max_size(small, 50) is small
  np.testing.assert_allclose(small.astype(int), np.asarray(
      Image.fromarray(big).resize((75, 50), Image.Resampling.BILINEAR)).astype(int), atol=6)
  data = encode_jpeg(small)
  assert data == encode_jpeg(small.copy()) and data[:2] == b'\xff\xd8'
  np.testing.assert_allclose(decode_rgb(data).astype(int), small.astype(int), atol=8)
  # A large JPEG decoded at reduced scale still gives the picture at the stored size.
  stored = stored_jpeg(encoded(big, 'JPEG', quality=95), 50)
  assert decode_rgb(stored).shape == (50, 75, 3)
  np.testing.assert_allclose(decode_rgb(stored).astype(int), small.astype(int), atol=10)
  assert stored == stored_jpeg(encoded(big, 'JPEG', quality=95), 50)
  for data in (encoded(big, 'JPEG', quality=95), encoded(big, 'PNG')):
    assert stored_jpeg(data, 50) == encode_jpeg(shrink_to_max_size(
        decode_rgb(data, min_shorter_side=50), 50))


def test_the_holdout_is_stratified_seeded_and_keeps_the_listing_order(tmp_path):
  write_image_folder(tmp_path, per_class=10, classes=CLASSES[:2], size=(8, 8))
  (tmp_path / 'pair').mkdir()
  for name in ('a.png', 'b.png'):
    (tmp_path / 'pair' / name).write_bytes(b'')
  folder = list_image_folder(str(tmp_path))
  splits = split_train_val(folder, 0.25, seed=4)
  assert [sum(label == c for _, label in splits['val']) for c in range(3)] == [2, 2, 1]
  assert sorted(splits['train'] + splits['val']) == sorted(folder.splits['train'])
  for examples in splits.values():
    assert examples == [e for e in folder.splits['train'] if e in examples]
  assert split_train_val(folder, 0.25, seed=4) == splits
  assert split_train_val(folder, 0.25, seed=5) != splits
  assert len(split_train_val(folder)['val']) == 1 + 1 + 1  # 10% of 10, 10 and 2.
  assert split_train_val(folder, 0) == {'train': list(folder.splits['train'])}
  with pytest.raises(ConfigError, match='val_fraction=1'):
    split_train_val(folder, 1)
