"""The 1,797 real handwritten digits that scikit-learn bundles, as small RGB images.

No download: the 8x8 scans ship inside scikit-learn. They are real data that no one here made,
which is what tests and ablations want when the SIGNS files are absent.
"""
import numpy as np

from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import ConfigError

NUM_TEST = 360  # One fifth of the digits, the same share in every class.
SPLIT_SEED = 0  # Fixed: the split is part of the dataset's definition, not of a run.
SOURCE_SIZE = 8


def load_digits_images(size: int = 32) -> Dataset:
  """The digits resized to size x size x 3 uint8 with a fixed stratified split.

  Values 0..16 become 0..255; bilinear resizing (pixel centres aligned, deterministic);
  the grey level is copied to three channels. Train 1,437 / test 360 images, each class
  split in (nearly) the same proportion.
  """
  # Imported here: scikit-learn is slow to import and only this loader needs it.
  from sklearn.datasets import load_digits
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < SOURCE_SIZE:
    raise ConfigError(f'load_digits_images: size={size!r}, expected an integer >= {SOURCE_SIZE} '
                      f'(the digits are {SOURCE_SIZE}x{SOURCE_SIZE})')
  digits = load_digits()
  images = digits.images.astype(np.float32) * (255.0 / 16.0)
  images = resize_bilinear(images, int(size))
  images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = digits.target.astype(np.int32)
  test_index = stratified_test_index(labels, NUM_TEST, np.random.default_rng(SPLIT_SEED))
  is_test = np.zeros(len(labels), bool)
  is_test[test_index] = True
  return Dataset(
      train=Split(images=images[~is_test], labels=labels[~is_test]),
      test=Split(images=images[is_test], labels=labels[is_test]),
      class_names=tuple(str(d) for d in range(10)),
      source=f'scikit-learn handwritten digits (8x8 resized to {size}x{size}, '
             f'{len(labels) - NUM_TEST} train / {NUM_TEST} test)')


def stratified_test_index(labels: np.ndarray, num_test: int,
                          rng: np.random.Generator) -> np.ndarray:
  """Sorted indices of `num_test` examples drawn so that every class gives its share.

  Each class gives floor(share); the examples left over go to the classes with the largest
  remainders (largest-remainder rounding), so that the total is exactly `num_test`.
  """
  classes, counts = np.unique(labels, return_counts=True)
  exact = counts * num_test / len(labels)
  take = np.floor(exact).astype(int)
  leftover = num_test - take.sum()
  take[np.argsort(-(exact - take), kind='stable')[:leftover]] += 1
  chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
  return np.sort(np.concatenate(chosen))


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of [N, h, w] float images to [N, size, size], half-pixel centres."""
  rows = _interpolation_matrix(images.shape[1], size)
  cols = _interpolation_matrix(images.shape[2], size)
  return np.einsum('ih,nhw,jw->nij', rows, images, cols)


def _interpolation_matrix(source: int, target: int) -> np.ndarray:
  """[target, source] weights of linear interpolation with edge clamping."""
  position = (np.arange(target) + 0.5) * source / target - 0.5
  position = np.clip(position, 0.0, source - 1.0)
  low = np.floor(position).astype(int)
  high = np.minimum(low + 1, source - 1)
  frac = position - low
  weights = np.zeros((target, source), np.float32)
  weights[np.arange(target), low] += 1.0 - frac
  weights[np.arange(target), high] += frac
  return weights
