"""resnet_jax.data: datasets as uint8 numpy splits, loaded from local files or made here."""
from resnet_jax.data.cifar10 import load_cifar10
from resnet_jax.data.digits import load_digits_images
from resnet_jax.data.fake_images import load_fake_imagenet
from resnet_jax.data.registry import (
  DATASET_NAMES,
  STREAMED_DATASET_NAMES,
  load_dataset,
  load_signs_or_synthetic,
)
from resnet_jax.data.signs import load_signs, load_signs_test
from resnet_jax.data.streamed import StreamedDataset, open_images
from resnet_jax.data.synthetic_signs import make_synthetic_signs
from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import DatasetError

__all__ = [
    'DATASET_NAMES',
    'STREAMED_DATASET_NAMES',
    'StreamedDataset',
    'Dataset',
    'DatasetError',
    'Split',
    'load_cifar10',
    'load_dataset',
    'load_digits_images',
    'load_fake_imagenet',
    'load_signs',
    'load_signs_test',
    'load_signs_or_synthetic',
    'make_synthetic_signs',
    'open_images',
]
