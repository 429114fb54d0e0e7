"""Preprocessing and augmentation as jittable functions, run on the device inside the step.

Everything here takes a batch of uint8 or float images [B, H, W, C] and is pure: the
randomness comes from a key, so the same key gives the same batch on every backend.
Augmentation draws one key per example from the example's position in the *global*
batch, so a batch split over 1 or 8 devices is augmented identically.
"""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PREPROCESS_MODES = ('scale', 'standardize', 'caffe')


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
  """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale.

  Computed on the host once from the training split (never the test split), in float64
  and in chunks so that a large split needs no float copy.
  """
  num_channels = images.shape[-1]
  total = np.zeros(num_channels)
  total_sq = np.zeros(num_channels)
  count = 0
  for start in range(0, len(images), 4096):
    chunk = images[start:start + 4096].reshape(-1, num_channels).astype(np.float64) / 255.0
    total += chunk.sum(0)
    total_sq += (chunk * chunk).sum(0)
    count += len(chunk)
  mean = total / max(count, 1)
  std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean * mean, 0.0))
  # A constant channel would divide by zero; leave it unscaled instead.
  std = np.where(std < 1e-6, 1.0, std)
  return mean.tolist(), std.tolist()


def preprocess(images: jax.Array, mode: str, mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None) -> jax.Array:
  """uint8 images -> float32 network input.

  mode 'scale' divides by 255 (the course's preprocessing); 'standardize' then subtracts
  the per-channel `mean` and divides by `std` (both on the [0, 1] scale, see
  `channel_stats`); 'caffe' is Keras's preprocessing for its ImageNet weights (RGB to BGR,
  minus the ImageNet means, no scaling): use it when fine-tuning from those weights.
  """
  if mode == 'caffe':
    from resnet_jax.weights.preprocess import caffe_preprocess
    return caffe_preprocess(images.astype(jnp.float32))
  x = images.astype(jnp.float32) / 255.0
  if mode == 'scale':
    return x
  if mode == 'standardize':
    if mean is None or std is None:
      raise ValueError("preprocess mode 'standardize' needs the per-channel mean and std")
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  raise ValueError(f'preprocess mode {mode!r}: expected one of {PREPROCESS_MODES}')


def random_crop(key: jax.Array, image: jax.Array, padding: int) -> jax.Array:
  """One image [H, W, C], zero-padded by `padding` on each side, cropped back to [H, W, C]."""
  height, width, channels = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (offsets[0], offsets[1], 0), (height, width, channels))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
  """One image [H, W, C], mirrored left-right with probability 1/2."""
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


def augment(key: jax.Array, images: jax.Array, example_ids: jax.Array, *, crop_padding: int = 0,
            flip: bool = False) -> jax.Array:
  """Random crop with padding and horizontal flip, each switchable, of a batch [B, H, W, C].

  Args:
    key: the step's augmentation key.
    images: float images [B, H, W, C] (already preprocessed, so the padding is the mean).
    example_ids: int [B], each example's position in the global batch; example i uses
      the key fold_in(key, example_ids[i]), so how the batch is split over devices does
      not change the result.
    crop_padding: pixels of zero padding per side before the random crop; 0 disables it.
    flip: whether to flip left-right at random.
  """
  if not crop_padding and not flip:
    return images

  def one(example_id, image):
    crop_key, flip_key = jax.random.split(jax.random.fold_in(key, example_id))
    if crop_padding:
      image = random_crop(crop_key, image, crop_padding)
    if flip:
      image = random_flip(flip_key, image)
    return image

  return jax.vmap(one)(example_ids, images)
