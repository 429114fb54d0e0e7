"""uint8 images -> the network's float input, inside the step (jittable, pure)."""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

PREPROCESS_MODES = ('scale', 'standardize', 'caffe')


def preprocess(images: jax.Array, mode: str, mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None) -> jax.Array:
  """uint8 images -> float32 network input.

  mode 'scale' divides by 255 (the course's preprocessing); 'standardize' then subtracts
  the per-channel `mean` and divides by `std` (both on the [0, 1] scale, see
  resnet_jax.data.channel_stats); 'caffe' is Keras's preprocessing for its ImageNet weights
  (RGB to BGR, minus the ImageNet means, no scaling): use it when fine-tuning from those
  weights.
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
