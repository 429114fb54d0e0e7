"""resnet_jax.data: sources of (label, image) records and the one input pipeline; numpy only.

Loaders return a `Dataset` whose splits are sources: in-memory uint8 arrays (`Split`: SIGNS,
synthetic SIGNS, digits, CIFAR-10, fake ImageNet) or encoded images read while training
(`open_images`: prepared shards or an image folder). `pipeline` turns any of them into this
process's numpy batch for step s.
"""
from resnet_jax.data.cifar10 import load_cifar10
from resnet_jax.data.digits import load_digits_images
from resnet_jax.data.fake_images import load_fake_imagenet
from resnet_jax.data.images import open_images
from resnet_jax.data.registry import DATASET_NAMES, load_dataset, load_signs_or_synthetic
from resnet_jax.data.signs import load_signs, load_signs_test
from resnet_jax.data.synthetic_signs import make_synthetic_signs
from resnet_jax.data.types import Dataset, Source, Split
from resnet_jax.errors import DatasetError

__all__ = [
    'DATASET_NAMES',
    'Dataset',
    'DatasetError',
    'Source',
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
