"""The scikit-learn digits as RGB images: sizes, values, and a fixed stratified split."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from resnet_jax.data import load_digits_images
from resnet_jax.data.digits import resize_bilinear
from resnet_jax.errors import ConfigError


@pytest.fixture(scope='module')
def digits32():
  return load_digits_images()


def test_shapes_dtypes_and_split_sizes(digits32):
  assert digits32.train.images.shape == (1437, 32, 32, 3)
  assert digits32.test.images.shape == (360, 32, 32, 3)
  for split in (digits32.train, digits32.test):
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
  assert digits32.class_names == tuple('0123456789')


def test_values_span_the_uint8_range_and_channels_are_equal(digits32):
  images = digits32.train.images
  assert images.min() == 0 and images.max() == 255
  np.testing.assert_array_equal(images[..., 0], images[..., 1])
  np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_split_is_stratified_and_covers_every_digit_once(digits32):
  target = load_digits().target
  train_counts = np.bincount(digits32.train.labels, minlength=10)
  test_counts = np.bincount(digits32.test.labels, minlength=10)
  np.testing.assert_array_equal(train_counts + test_counts, np.bincount(target))
  assert digits32.train.labels.min() == 0 and digits32.train.labels.max() == 9
  # Every class gives a fifth of its digits to the test split (to the nearest image).
  np.testing.assert_allclose(test_counts, np.bincount(target) * 360 / 1797, atol=1.0)


def test_native_size_keeps_the_scanned_values_and_the_split_is_fixed():
  data = load_digits_images(size=8)
  original = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
  # Each test image is one of the originals, and train and test together are all of them.
  both = np.concatenate([data.train.images[..., 0], data.test.images[..., 0]])
  rows = lambda a: a.reshape(len(a), -1)[np.lexsort(a.reshape(len(a), -1).T)]
  np.testing.assert_array_equal(rows(both), rows(original))
  again = load_digits_images(size=8)
  np.testing.assert_array_equal(again.test.images, data.test.images)
  np.testing.assert_array_equal(again.test.labels, data.test.labels)


def test_bilinear_resize_matches_jax_image_resize():
  images = np.random.default_rng(0).uniform(0, 16, (5, 8, 8)).astype(np.float32)
  for size in (16, 32, 20):
    ours = resize_bilinear(images, size)
    reference = jax.image.resize(jnp.asarray(images), (5, size, size), method='linear')
    np.testing.assert_allclose(ours, np.asarray(reference), atol=1e-4)


@pytest.mark.parametrize('size', [4, 0, 16.0, True])
def test_sizes_below_eight_or_not_integers_are_config_errors(size):
  with pytest.raises(ConfigError, match='size'):
    load_digits_images(size=size)
