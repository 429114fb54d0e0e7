"""What the network sees: uint8 images -> float input inside the step (exact values, the
train split's channel statistics), and the host augmentation's seed and off switch (its
definitions and its change with epoch and example are in test_pipeline.py)."""
import numpy as np
import pytest

from resnet_jax.data import pipeline
from resnet_jax.data.augment import Augmentation
from resnet_jax.data.channel_stats import channel_stats
from resnet_jax.data.sources import FileSource
from resnet_jax.data.types import Split
from resnet_jax.errors import ConfigError
from resnet_jax.train.preprocess import preprocess


def _images(n=6, size=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_scale_divides_by_255():
  images = _images()
  np.testing.assert_allclose(preprocess(images, 'scale'), images / 255.0, rtol=1e-6)


def test_standardize_with_train_stats_gives_zero_mean_unit_std():
  images = _images(50)
  mean, std = channel_stats(Split(images, np.zeros(50, np.int32)))
  x = np.asarray(preprocess(images, 'standardize', mean, std))
  np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1.0, atol=1e-4)


def test_standardize_of_encoded_images_is_refused_at_run_start():
  # Encoded images would have to be decoded whole for their statistics.
  with pytest.raises(ConfigError, match=r"config\.data\.preprocess='standardize'"):
    channel_stats(FileSource(['a.png'], [0]))


def test_unknown_preprocess_mode_is_refused():
  with pytest.raises(ValueError, match='whiten'):
    preprocess(_images(), 'whiten')


def test_the_augmentation_is_fixed_by_the_seed_and_off_when_disabled():
  image = _images(1)[0]

  def view(augmentation, seed, epoch=0, index=0):
    out = np.zeros((8, 8, 3), np.uint8)
    augmentation.train_view(image, pipeline.example_rng(seed, epoch, index), 8, out)
    return out

  on = Augmentation(crop_padding=2, flip=True)
  np.testing.assert_array_equal(view(on, 1), view(on, 1))
  assert not np.array_equal(view(on, 1), image)
  # Another seed augments the same example at the same (epoch, index) differently.
  assert any(not np.array_equal(view(on, 1, 0, i), view(on, 2, 0, i)) for i in range(4))
  # Without padding and flips the training view is the picture itself, whatever the seed.
  for seed in range(4):
    np.testing.assert_array_equal(view(Augmentation(), seed), image)
