"""Per-channel mean and standard deviation of a training split, for 'standardize' input."""
import numpy as np

from resnet_jax.data.types import Split
from resnet_jax.errors import ConfigError

_CHUNK = 4096


def channel_stats(split) -> tuple[list[float], list[float]]:
  """Per-channel mean and standard deviation of a split's uint8 images, on the [0, 1] scale.

  Computed on the host once from the training split (never the test split), in float64
  and in chunks so that a large split needs no float copy. Needs the images in memory (a
  Split): a split of encoded images would have to be decoded whole first.
  """
  if not isinstance(split, Split):
    raise ConfigError("config.data.preprocess='standardize' needs the training images in "
                      'memory for its channel statistics; this dataset is read from encoded '
                      "files: expected 'scale' or 'caffe'")
  images = split.images
  num_channels = images.shape[-1]
  total, total_sq, count = np.zeros(num_channels), np.zeros(num_channels), 0
  for start in range(0, len(images), _CHUNK):
    chunk = images[start:start + _CHUNK].reshape(-1, num_channels).astype(np.float64) / 255.0
    total += chunk.sum(0)
    total_sq += (chunk * chunk).sum(0)
    count += len(chunk)
  mean = total / max(count, 1)
  std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean * mean, 0.0))
  # A constant channel would divide by zero; leave it unscaled instead.
  std = np.where(std < 1e-6, 1.0, std)
  return mean.tolist(), std.tolist()
