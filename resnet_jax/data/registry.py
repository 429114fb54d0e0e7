"""Datasets by name, and the SIGNS policy: the real files where given, else the synthetic set."""
import dataclasses
import os

from resnet_jax.data.cifar10 import load_cifar10
from resnet_jax.data.digits import load_digits_images
from resnet_jax.data.fake_images import load_fake_imagenet
from resnet_jax.data.images import open_images
from resnet_jax.data.signs import SIGNS_FILES, has_signs_files, load_signs
from resnet_jax.data.synthetic_signs import GENERATOR_VERSION, make_synthetic_signs
from resnet_jax.data.types import Dataset
from resnet_jax.errors import ConfigError, DamagedCacheError, DatasetError

# 'images': prepared shards or an image folder, read while training (images.open_images).
DATASET_NAMES = ('signs', 'digits', 'cifar10', 'fake_imagenet', 'images')
# Sizes the loaders produce; SIGNS and CIFAR-10 are not resized on loading.
_NATIVE_SIZE = {'signs': 64, 'cifar10': 32}


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/resnet_jax, or ~/.cache/resnet_jax."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'resnet_jax')


def load_signs_or_synthetic(data_dir: str | None, cache_dir: str | None = None,
                            seed: int = 0) -> Dataset:
  """The real SIGNS files if `data_dir` holds both, else the default synthetic set.

  The synthetic set (1,080 train / 120 test pictures) is generated once into
  `cache_dir/synthetic_signs_v{version}_seed{seed}` and reused afterwards; `cache_dir`
  defaults to `default_cache_dir()`.

  Raises:
    DatasetError if `data_dir` holds only one of the two files (half a dataset is a mistake,
    not a reason to switch to other data), or for any problem in the files read.
  """
  have = has_signs_files(data_dir)
  if all(have):
    return dataclasses.replace(load_signs(data_dir), source=f'real SIGNS from {data_dir}')
  if any(have):
    present, missing = (SIGNS_FILES[0], SIGNS_FILES[1]) if have[0] else (SIGNS_FILES[1],
                                                                          SIGNS_FILES[0])
    raise DatasetError(
        f'{os.path.join(data_dir, missing)!r} is missing but {present} is in {data_dir!r}; '
        f'expected both SIGNS files (or neither, to use the synthetic set)')
  if data_dir is not None and not os.path.isdir(data_dir):
    raise DatasetError(f'SIGNS directory {data_dir!r} does not exist; expected a directory with '
                       f'{" and ".join(SIGNS_FILES)} (or data_dir=None for the synthetic set)')
  cache = os.path.join(cache_dir or default_cache_dir(),
                       f'synthetic_signs_v{GENERATOR_VERSION}_seed{seed}')
  if all(has_signs_files(cache)):
    how = 'cached in'
  else:
    # The content is a function of the seed, so replacing a half-written pair is harmless,
    # and so is a second process finishing the same files first.
    make_synthetic_signs(cache, seed=seed, overwrite=True)
    how = 'generated into'
  note = f'; no SIGNS files in {data_dir}' if data_dir is not None else ''
  try:
    cached = load_signs(cache)
  except DatasetError as error:
    raise DamagedCacheError(
        f'the cached synthetic SIGNS set in {cache!r} is damaged ({error}); delete that '
        'directory and rerun to regenerate it (it is generated data, nothing is lost)') from error
  return dataclasses.replace(cached,
                             source=f'synthetic SIGNS (seed {seed}) {how} {cache}{note}')


def load_dataset(name: str, data_dir: str | None = None, cache_dir: str | None = None,
                 image_size: int | None = None, seed: int = 0,
                 eval_only: bool = False) -> Dataset:
  """Loads a dataset by name (one of DATASET_NAMES).

  Args:
    name: 'signs' (real files in data_dir, else synthetic; 64 px), 'digits' (scikit-learn's
      handwritten digits, image_size default 32), 'cifar10' (needs data_dir; 32 px) or
      'fake_imagenet' (random images, image_size default 224) or 'images' (prepared shards
      or an image folder in data_dir, any size: the pipeline resizes).
    data_dir: where the files are; 'signs', 'cifar10' and 'images' read files.
    cache_dir: where the synthetic SIGNS set is kept.
    image_size: the side of the images; for 'signs' and 'cifar10' it can only be their own.
    seed: the synthetic SIGNS set's and fake_imagenet's seed.
    eval_only: 'images' opens only the evaluation split (its train split is then empty, see
      images.open_images); the other datasets load whole either way.
  Raises:
    ConfigError for an unknown name or an impossible image_size; DatasetError for file problems.
  """
  if name not in DATASET_NAMES:
    raise ConfigError(f'dataset name {name!r} is unknown; expected one of {DATASET_NAMES}')
  native = _NATIVE_SIZE.get(name)
  if native is not None and image_size not in (None, native):
    raise ConfigError(f'image_size={image_size} for dataset {name!r}, expected {native} (or '
                      f'None): its images are {native}x{native} and are not resized on loading')
  if name == 'images':
    return open_images(data_dir, seed=seed, eval_only=eval_only)
  if name == 'signs':
    return load_signs_or_synthetic(data_dir, cache_dir, seed=seed)
  if name == 'digits':
    return load_digits_images(size=image_size or 32)
  if name == 'cifar10':
    if data_dir is None:
      raise ConfigError('dataset cifar10 needs data_dir: a local copy of cifar-10-batches-bin/ '
                        'or cifar-10-batches-py/ (nothing is downloaded)')
    return load_cifar10(data_dir)
  return load_fake_imagenet(image_size=image_size or 224, seed=seed)
