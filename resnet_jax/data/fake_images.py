"""Random uint8 images with random labels: input for throughput measurements, not for learning."""
import numpy as np

from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import ConfigError


def load_fake_imagenet(image_size: int = 224, num_train: int = 512, num_test: int = 128,
                       num_classes: int = 1000, seed: int = 0) -> Dataset:
  """ImageNet-shaped noise: [N, image_size, image_size, 3] uint8, labels in [0, num_classes)."""
  for name, value in (('image_size', image_size), ('num_train', num_train),
                      ('num_test', num_test), ('num_classes', num_classes)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ConfigError(f'load_fake_imagenet: {name}={value!r}, expected a positive integer')
  rng = np.random.default_rng(seed)

  def split(num):
    images = rng.integers(0, 256, (num, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, num).astype(np.int32)
    return Split(images=images, labels=labels)

  return Dataset(train=split(num_train), test=split(num_test),
                 class_names=tuple(f'class_{i}' for i in range(num_classes)),
                 source=f'fake ImageNet: random {image_size}x{image_size} uint8 images '
                        f'(seed {seed})')
