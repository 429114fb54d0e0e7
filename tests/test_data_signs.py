"""load_signs: the course's h5 layout round-trips; every bad file is a DatasetError naming it."""
import os

import h5py
import numpy as np
import pytest

from resnet_jax.data import Dataset, DatasetError, load_signs


def write_split(path, split, x, y, classes=np.arange(6), **file_kwargs):
  with h5py.File(path, 'w', **file_kwargs) as f:
    f.create_dataset(f'{split}_set_x', data=x)
    f.create_dataset(f'{split}_set_y', data=y)
    f.create_dataset('list_classes', data=np.asarray(classes))


def course_arrays(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
  y = (np.arange(n) % 6).astype(np.int64)
  return x, y


@pytest.fixture
def signs_dir(tmp_path):
  """A small, valid pair of SIGNS files: 12 train and 6 test pictures."""
  write_split(tmp_path / 'train_signs.h5', 'train', *course_arrays(12, 0))
  write_split(tmp_path / 'test_signs.h5', 'test', *course_arrays(6, 1))
  return tmp_path


def snapshot(directory):
  """Bytes and modification times of every file under `directory`."""
  state = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        state[path] = (f.read(), os.stat(path).st_mtime_ns)
  return state


def test_round_trip_returns_the_stored_arrays_and_leaves_files_untouched(signs_dir):
  before = snapshot(signs_dir)
  data = load_signs(str(signs_dir))
  assert isinstance(data, Dataset)
  for split, n, seed in (('train', 12, 0), ('test', 6, 1)):
    x, y = course_arrays(n, seed)
    got = getattr(data, split)
    assert got.images.dtype == np.uint8 and got.images.shape == (n, 64, 64, 3)
    np.testing.assert_array_equal(got.images, x)
    assert got.labels.dtype == np.int32
    np.testing.assert_array_equal(got.labels, y)
  assert data.class_names == ('0', '1', '2', '3', '4', '5')
  assert str(signs_dir) in data.source
  assert snapshot(signs_dir) == before


def test_labels_stored_as_one_row_are_accepted(tmp_path):
  x, y = course_arrays(12, 0)
  write_split(tmp_path / 'train_signs.h5', 'train', x, y[None, :])  # (1, N), as some copies do.
  write_split(tmp_path / 'test_signs.h5', 'test', *course_arrays(6, 1))
  np.testing.assert_array_equal(load_signs(str(tmp_path)).train.labels, y)


def test_labels_become_indices_into_list_classes(tmp_path):
  x = np.zeros((4, 64, 64, 3), np.uint8)
  write_split(tmp_path / 'train_signs.h5', 'train', x, np.array([7, 3, 3, 7]), classes=[7, 3])
  write_split(tmp_path / 'test_signs.h5', 'test', x[:2], np.array([3, 7]), classes=[7, 3])
  data = load_signs(str(tmp_path))
  assert data.class_names == ('7', '3')
  np.testing.assert_array_equal(data.train.labels, [0, 1, 1, 0])
  np.testing.assert_array_equal(data.test.labels, [1, 0])


def test_a_file_with_a_user_block_is_hdf5_too(tmp_path):
  # The HDF5 signature then sits at offset 512, not 0.
  x, y = course_arrays(12, 0)
  write_split(tmp_path / 'train_signs.h5', 'train', x, y, userblock_size=512)
  write_split(tmp_path / 'test_signs.h5', 'test', *course_arrays(6, 1))
  with open(tmp_path / 'train_signs.h5', 'rb') as f:
    assert not f.read(8).startswith(b'\x89HDF')
  np.testing.assert_array_equal(load_signs(str(tmp_path)).train.images, x)


def _rewrite_train(**changes):
  """A case that rewrites train_signs.h5 with some arrays replaced."""
  def make(directory):
    x, y = course_arrays(12, 0)
    arrays = dict(x=x, y=y, classes=np.arange(6))
    arrays.update(changes)
    write_split(directory / 'train_signs.h5', 'train', arrays['x'], arrays['y'], arrays['classes'])
    return directory / 'train_signs.h5'
  return make


def _write_bytes(content):
  def make(directory):
    (directory / 'train_signs.h5').write_bytes(content)
    return directory / 'train_signs.h5'
  return make


def _without_key(key):
  def make(directory):
    path = directory / 'train_signs.h5'
    x, y = course_arrays(12, 0)
    with h5py.File(path, 'w') as f:
      for name, value in (('train_set_x', x), ('train_set_y', y), ('list_classes', np.arange(6))):
        if name != key:
          f.create_dataset(name, data=value)
    return path
  return make


def _truncated(directory):
  path = directory / 'train_signs.h5'
  content = path.read_bytes()
  path.write_bytes(content[:len(content) // 3])
  return path


def _remove_test_file(directory):
  os.remove(directory / 'test_signs.h5')
  return directory / 'test_signs.h5'


def _other_test_classes(directory):
  write_split(directory / 'test_signs.h5', 'test', *course_arrays(6, 1), classes=np.arange(7))
  return directory / 'test_signs.h5'


BAD_CASES = {
    'missing file': (_remove_test_file, 'missing'),
    'html page': (_write_bytes(b'<!DOCTYPE html>\n<html><head><title>Sign in</title></head>'),
                  'HTML page'),
    'html page, lower case with spaces': (_write_bytes(b'\n  <html lang="en"><body>404</body>'),
                                          'failed download'),
    'not hdf5': (_write_bytes(b'PK\x03\x04' + bytes(2000)), 'not an HDF5 file'),
    'empty file': (_write_bytes(b''), 'empty'),
    'truncated hdf5': (_truncated, 'h5py cannot read it'),
    'missing x': (_without_key('train_set_x'), "no dataset 'train_set_x'"),
    'missing y': (_without_key('train_set_y'), "no dataset 'train_set_y'"),
    'missing classes': (_without_key('list_classes'), "no dataset 'list_classes'"),
    'float images': (_rewrite_train(x=np.zeros((12, 64, 64, 3), np.float32)), 'expected uint8'),
    'wrong image shape': (_rewrite_train(x=np.zeros((12, 32, 32, 3), np.uint8)),
                          'expected (N, 64, 64, 3)'),
    'grey images': (_rewrite_train(x=np.zeros((12, 64, 64), np.uint8)), 'expected (N, 64, 64, 3)'),
    'length mismatch': (_rewrite_train(y=np.zeros(11, np.int64)), '12 images but'),
    'label outside classes': (_rewrite_train(y=np.array([0, 1, 2, 3, 4, 6] * 2)),
                              'not in list_classes'),
    'negative label': (_rewrite_train(y=np.array([0, 1, 2, 3, 4, -1] * 2)), 'not in list_classes'),
    'float labels': (_rewrite_train(y=np.zeros(12, np.float64)), 'expected integer labels'),
    'labels as a matrix': (_rewrite_train(y=np.zeros((2, 6), np.int64)), 'expected integer labels'),
    'empty split': (_rewrite_train(x=np.zeros((0, 64, 64, 3), np.uint8), y=np.zeros(0, np.int64)),
                    'empty'),
    'duplicate classes': (_rewrite_train(classes=np.array([0, 1, 1, 2, 3, 4, 5])), 'distinct'),
    'different classes in the test file': (_other_test_classes, 'differs'),
}


@pytest.mark.parametrize('case', sorted(BAD_CASES))
def test_each_bad_file_raises_dataset_error_naming_it_and_stays_unchanged(signs_dir, case):
  make, expected = BAD_CASES[case]
  bad_path = make(signs_dir)
  before = snapshot(signs_dir)
  with pytest.raises(DatasetError) as error:
    load_signs(str(signs_dir))
  message = str(error.value)
  assert str(bad_path) in message
  assert expected in message
  assert snapshot(signs_dir) == before
  assert isinstance(error.value, ValueError)


def test_a_missing_directory_is_named(tmp_path):
  missing = tmp_path / 'no_such_dir'
  with pytest.raises(DatasetError, match='does not exist') as error:
    load_signs(str(missing))
  assert str(missing) in str(error.value)
  assert not missing.exists()
