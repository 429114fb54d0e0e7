"""Preprocessing and augmentation: exact values, determinism per key, change with the key."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.data import augment


def _images(n=6, size=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_scale_divides_by_255():
  images = _images()
  np.testing.assert_allclose(augment.preprocess(images, 'scale'), images / 255.0, rtol=1e-6)


def test_standardize_with_train_stats_gives_zero_mean_unit_std():
  images = _images(50)
  mean, std = augment.channel_stats(images)
  x = np.asarray(augment.preprocess(images, 'standardize', mean, std))
  np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1.0, atol=1e-4)


def test_unknown_preprocess_mode_is_refused():
  with pytest.raises(ValueError, match='whiten'):
    augment.preprocess(_images(), 'whiten')


def test_augmentation_is_deterministic_per_key_and_changes_with_key():
  x = augment.preprocess(_images(), 'scale')
  ids = jnp.arange(6)
  run = jax.jit(lambda k: augment.augment(k, x, ids, crop_padding=2, flip=True))
  a, b = run(jax.random.key(1)), run(jax.random.key(1))
  c = run(jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a, x)


def test_disabled_augmentation_is_the_identity():
  x = augment.preprocess(_images(), 'scale')
  out = augment.augment(jax.random.key(0), x, jnp.arange(6), crop_padding=0, flip=False)
  np.testing.assert_array_equal(out, x)


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
  x = np.asarray(augment.preprocess(_images(1), 'scale'))[0]
  padded = np.pad(x, ((3, 3), (3, 3), (0, 0)))
  for seed in range(8):
    out = np.asarray(augment.random_crop(jax.random.key(seed), jnp.asarray(x), 3))
    windows = [padded[i:i + 8, j:j + 8] for i in range(7) for j in range(7)]
    assert any(np.array_equal(out, w) for w in windows)


def test_flip_mirrors_left_right_about_half_the_time():
  x = jnp.asarray(augment.preprocess(_images(1), 'scale'))[0]
  flips = 0
  for seed in range(40):
    out = np.asarray(augment.random_flip(jax.random.key(seed), x))
    if np.array_equal(out, np.asarray(x)[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, x)
  assert 10 <= flips <= 30


@pytest.mark.slow  # Compiles augmentation on several devices.
def test_augmentation_does_not_depend_on_how_the_batch_is_split():
  # Each example's key comes from its global position, so devices can split the batch.
  x = augment.preprocess(_images(), 'scale')
  key = jax.random.key(5)
  whole = augment.augment(key, x, jnp.arange(6), crop_padding=2, flip=True)
  parts = [augment.augment(key, x[i:i + 2], jnp.arange(i, i + 2), crop_padding=2, flip=True)
           for i in (0, 2, 4)]
  np.testing.assert_array_equal(whole, np.concatenate(parts))
