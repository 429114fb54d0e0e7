"""load_dataset by name, and load_signs_or_synthetic's choice between real and synthetic SIGNS."""
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import (
  DATASET_NAMES,
  Dataset,
  DatasetError,
  Split,
  load_dataset,
  load_signs_or_synthetic,
)
from resnet_jax.data.synthetic_signs import GENERATOR_VERSION
from resnet_jax.errors import ConfigError


def write_signs(directory, files=('train', 'test'), n=6):
  os.makedirs(directory, exist_ok=True)
  for split in files:
    with h5py.File(os.path.join(directory, f'{split}_signs.h5'), 'w') as f:
      f.create_dataset(f'{split}_set_x', data=np.full((n, 64, 64, 3), 9, np.uint8))
      f.create_dataset(f'{split}_set_y', data=np.arange(n) % 6)
      f.create_dataset('list_classes', data=np.arange(6))


@pytest.fixture(scope='module')
def synthetic_cache(tmp_path_factory):
  """A cache directory holding the default synthetic set, generated once for this module."""
  cache = tmp_path_factory.mktemp('cache')
  data = load_signs_or_synthetic(None, str(cache))
  return cache, data


def test_without_data_dir_the_synthetic_set_is_generated_into_the_cache(synthetic_cache):
  cache, data = synthetic_cache
  folder = cache / f'synthetic_signs_v{GENERATOR_VERSION}_seed0'
  assert sorted(os.listdir(folder)) == ['test_signs.h5', 'train_signs.h5']
  assert data.source == f'synthetic SIGNS (seed 0) generated into {folder}'
  assert data.train.images.shape == (1080, 64, 64, 3) and data.test.images.shape == (120, 64, 64, 3)


def test_the_cached_set_is_reused_not_rewritten(synthetic_cache):
  cache, first = synthetic_cache
  folder = cache / f'synthetic_signs_v{GENERATOR_VERSION}_seed0'
  mtimes = {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder)}
  again = load_signs_or_synthetic(None, str(cache))
  assert again.source.startswith('synthetic SIGNS (seed 0) cached in')
  assert {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder)} == mtimes
  np.testing.assert_array_equal(again.test.images, first.test.images)


def test_a_data_dir_without_the_files_falls_back_to_the_cached_set(synthetic_cache, tmp_path):
  cache, first = synthetic_cache
  data = load_signs_or_synthetic(str(tmp_path), str(cache))
  assert 'synthetic SIGNS' in data.source and f'no SIGNS files in {tmp_path}' in data.source
  np.testing.assert_array_equal(data.train.labels, first.train.labels)


def test_real_files_win_when_both_are_there(tmp_path):
  write_signs(tmp_path / 'signs')
  data = load_signs_or_synthetic(str(tmp_path / 'signs'), str(tmp_path / 'cache'))
  assert data.source == f'real SIGNS from {tmp_path / "signs"}'
  assert (data.train.images == 9).all()
  assert not (tmp_path / 'cache').exists()  # Nothing generated.


@pytest.mark.parametrize('present, missing', [('train', 'test'), ('test', 'train')])
def test_half_a_dataset_is_an_error_not_a_switch_to_synthetic(tmp_path, present, missing):
  write_signs(tmp_path / 'signs', files=(present,))
  with pytest.raises(DatasetError) as error:
    load_signs_or_synthetic(str(tmp_path / 'signs'), str(tmp_path / 'cache'))
  assert str(tmp_path / 'signs' / f'{missing}_signs.h5') in str(error.value)
  assert not (tmp_path / 'cache').exists()


def test_a_data_dir_that_does_not_exist_is_an_error(tmp_path):
  with pytest.raises(DatasetError, match='does not exist'):
    load_signs_or_synthetic(str(tmp_path / 'typo'), str(tmp_path / 'cache'))
  assert not (tmp_path / 'cache').exists()


def test_load_dataset_signs_goes_through_the_same_policy(tmp_path):
  write_signs(tmp_path)
  data = load_dataset('signs', data_dir=str(tmp_path), image_size=64)
  assert data.source.startswith('real SIGNS')


def test_dataset_names():
  assert DATASET_NAMES == ('signs', 'digits', 'cifar10', 'fake_imagenet', 'images')


def test_images_by_name_open_a_folder_as_a_source_of_encoded_records(tmp_path):
  # 'images' is a name like the others: a Dataset whose splits the one pipeline decodes.
  for split, count in (('train', 3), ('val', 1)):
    for label in ('cats', 'dogs'):
      folder = tmp_path / split / label
      folder.mkdir(parents=True)
      for i in range(count):
        Image.new('RGB', (6, 4), (i * 40, 0, 0)).save(folder / f'{i}.png')
  data = load_dataset('images', data_dir=str(tmp_path))
  assert data.class_names == ('cats', 'dogs') and (len(data.train), len(data.test)) == (6, 2)
  assert data.image_shape is None  # Any size: the pipeline resizes.
  label, encoded = data.train[3]
  assert label == 1 and isinstance(encoded, bytes)
  with pytest.raises(DatasetError, match='needs data_dir'):
    load_dataset('images')


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ConfigError, match='imagenet2') as error:
    load_dataset('imagenet2')
  for name in DATASET_NAMES:
    assert name in str(error.value)


@pytest.mark.parametrize('name, size', [('signs', 32), ('cifar10', 64)])
def test_sizes_that_would_need_resizing_are_config_errors(name, size):
  with pytest.raises(ConfigError, match='image_size'):
    load_dataset(name, data_dir='/nonexistent', image_size=size)


def test_cifar10_needs_a_data_dir():
  with pytest.raises(ConfigError, match='data_dir'):
    load_dataset('cifar10')


def test_digits_by_name_take_the_image_size():
  data = load_dataset('digits', image_size=16)
  assert data.train.images.shape == (1437, 16, 16, 3) and data.num_classes == 10


def test_fake_imagenet_is_random_uint8_of_the_given_size_and_seeded():
  data = load_dataset('fake_imagenet', image_size=40, seed=1)
  assert isinstance(data, Dataset) and data.image_shape == (40, 40, 3)
  assert data.train.images.dtype == np.uint8 and len(data.train) == 512 and len(data.test) == 128
  assert data.num_classes == 1000
  assert 0 <= data.train.labels.min() and data.train.labels.max() < 1000
  # Uniform noise: mean near 127.5, all values used.
  assert abs(data.train.images.mean() - 127.5) < 1.0 and np.ptp(data.train.images) == 255
  same = load_dataset('fake_imagenet', image_size=40, seed=1)
  other = load_dataset('fake_imagenet', image_size=40, seed=2)
  np.testing.assert_array_equal(same.train.images, data.train.images)
  assert (other.train.images != data.train.images).mean() > 0.9
  assert load_dataset('fake_imagenet').image_shape == (224, 224, 3)


def test_split_and_dataset_reject_malformed_arrays():
  images = np.zeros((2, 4, 4, 3), np.uint8)
  with pytest.raises(DatasetError, match='int32'):
    Split(images=images, labels=np.zeros(2, np.int64))
  with pytest.raises(DatasetError, match='uint8'):
    Split(images=images.astype(np.float32), labels=np.zeros(2, np.int32))
  with pytest.raises(DatasetError, match='2 images but 3 labels'):
    Split(images=images, labels=np.zeros(3, np.int32))
  ok = Split(images=images, labels=np.array([0, 2], np.int32))
  with pytest.raises(DatasetError, match='labels span'):
    Dataset(train=ok, test=ok, class_names=('a', 'b'), source='test')
  assert Dataset(train=ok, test=ok, class_names=('a', 'b', 'c'), source='test').num_classes == 3


def test_a_damaged_cached_set_says_to_delete_the_cache_not_to_fix_data_dir(
    tmp_path, monkeypatch):
  from resnet_jax.errors import DamagedCacheError
  from resnet_jax.train import base_config, setup
  cache = tmp_path / 'cache' / f'synthetic_signs_v{GENERATOR_VERSION}_seed0'
  write_signs(cache)
  path = cache / 'test_signs.h5'
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:  # Cut short by a full disk, say: the HDF5 signature remains.
    f.truncate(size // 2)
  config = base_config()
  config.data.name, config.data.data_dir = 'signs', None
  config.data.cache_dir = str(tmp_path / 'cache')
  monkeypatch.chdir(tmp_path)  # No data/signs here: the cached synthetic set is used.
  with pytest.raises(DamagedCacheError) as raised:
    setup.load_data(config.data)
  message = str(raised.value)
  assert f'{str(cache)!r} is damaged' in message and 'test_signs.h5' in message
  assert 'delete that directory and rerun to regenerate it' in message
  assert 'config.data.data_dir' not in message
  assert os.path.getsize(path) == size // 2  # Reported, not silently replaced.
