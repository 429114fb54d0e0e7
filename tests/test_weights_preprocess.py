"""caffe_preprocess against keras.applications.resnet50.preprocess_input."""
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from resnet_jax.weights import IMAGENET_MEAN_BGR, caffe_preprocess


@pytest.fixture
def images():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)


def test_equals_keras_resnet50_preprocess_input(images):
  theirs = keras.applications.resnet50.preprocess_input(images.astype(np.float32))
  ours = caffe_preprocess(images)
  assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_flips_to_bgr_and_subtracts_means_without_scaling():
  pixel = np.array([[[10, 20, 30]]], np.uint8)  # R, G, B
  expected = np.array([30, 20, 10], np.float32) - np.array(IMAGENET_MEAN_BGR, np.float32)
  np.testing.assert_allclose(caffe_preprocess(pixel)[0, 0], expected, rtol=0, atol=1e-5)


def test_jax_arrays_stay_jax_and_jit(images):
  ours = jax.jit(caffe_preprocess)(jnp.asarray(images))
  assert isinstance(ours, jax.Array) and ours.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(ours), caffe_preprocess(images))


def test_rejects_channels_first(images):
  with pytest.raises(ValueError, match=r'shape \(3, 3, 5, 7\); expected RGB images'):
    caffe_preprocess(images.transpose(0, 3, 1, 2))
