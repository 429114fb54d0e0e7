"""The course's SIGNS hand-sign dataset: two HDF5 files, read-only.

Layout of `train_signs.h5` (and likewise `test_signs.h5` with `test_` names):
  train_set_x   uint8 [N, 64, 64, 3]
  train_set_y   integer [N] (some copies store [1, N])
  list_classes  integer [K], the class ids (0..5 in the course)
"""
import os

import h5py
import numpy as np

from resnet_jax.data.files import require_dir, require_hdf5
from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import DatasetError

TRAIN_FILE = 'train_signs.h5'
TEST_FILE = 'test_signs.h5'
SIGNS_FILES = (TRAIN_FILE, TEST_FILE)
IMAGE_SHAPE = (64, 64, 3)


def has_signs_files(data_dir: str | None) -> tuple[bool, bool]:
  """Whether `data_dir` holds (train_signs.h5, test_signs.h5); (False, False) for None."""
  if data_dir is None:
    return False, False
  return tuple(os.path.isfile(os.path.join(data_dir, name)) for name in SIGNS_FILES)


def load_signs(data_dir: str) -> Dataset:
  """Reads `train_signs.h5` and `test_signs.h5` from `data_dir`; never writes to them.

  Returns:
    A Dataset with uint8 images [N, 64, 64, 3], int32 labels (indices into
    `list_classes`) and class names taken from `list_classes`.
  Raises:
    DatasetError naming the file for anything missing, malformed or inconsistent.
  """
  require_dir(data_dir, 'SIGNS directory')
  train, train_classes = _read_split(os.path.join(data_dir, TRAIN_FILE), 'train')
  test, test_classes = _read_split(os.path.join(data_dir, TEST_FILE), 'test')
  if not np.array_equal(train_classes, test_classes):
    raise DatasetError(
        f'{os.path.join(data_dir, TEST_FILE)!r}: list_classes {test_classes.tolist()} differs from '
        f'{train_classes.tolist()} in {TRAIN_FILE}; expected the same classes in both files')
  return Dataset(train=train, test=test, class_names=tuple(str(c) for c in train_classes),
                 source=f'SIGNS h5 files in {data_dir}')


def load_signs_test(path: str) -> tuple[Split, tuple[str, ...]]:
  """Reads a SIGNS test file alone (no training file needed), read-only.

  Args:
    path: a directory holding `test_signs.h5`, or a file in its layout (test_set_x, ...).

  Returns:
    (the test split, its class names from `list_classes`).
  Raises:
    DatasetError naming the file for anything missing, malformed or inconsistent.
  """
  if not os.path.isfile(path):
    require_dir(path, 'SIGNS directory')
    path = os.path.join(path, TEST_FILE)
  test, classes = _read_split(path, 'test')
  return test, tuple(str(c) for c in classes)


def signs_test_file(path: str) -> str:
  """The test file `load_signs_test(path)` reads."""
  return path if os.path.isfile(path) else os.path.join(path, TEST_FILE)


def _read_split(path: str, split: str) -> tuple[Split, np.ndarray]:
  require_hdf5(path)
  x_key, y_key = f'{split}_set_x', f'{split}_set_y'
  try:
    with h5py.File(path, 'r') as f:
      x = _read_array(f, path, x_key)
      y = _read_array(f, path, y_key)
      classes = _read_array(f, path, 'list_classes')
  except OSError as e:  # A truncated or corrupt file that still carries the signature.
    raise DatasetError(f'{path!r}: h5py cannot read it ({e}); expected an intact HDF5 file') from e

  if x.dtype != np.uint8:
    raise DatasetError(f'{path!r}: {x_key} has dtype {x.dtype}, expected uint8')
  if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
    raise DatasetError(f'{path!r}: {x_key} has shape {x.shape}, expected (N, 64, 64, 3)')
  if len(x) == 0:
    raise DatasetError(f'{path!r}: {x_key} is empty (0 images), expected at least one')

  classes = _integral_vector(classes, path, 'list_classes', 'integer class ids [K]')
  if len(classes) == 0 or len(np.unique(classes)) != len(classes):
    raise DatasetError(f'{path!r}: list_classes is {classes.tolist()}, expected distinct class ids')

  if y.ndim == 2 and y.shape[0] == 1:  # Some copies of the course files store labels as [1, N].
    y = y[0]
  y = _integral_vector(y, path, y_key, 'integer labels [N] or [1, N]')
  if len(y) != len(x):
    raise DatasetError(f'{path!r}: {x_key} has {len(x)} images but {y_key} has {len(y)} labels, '
                       f'expected equal counts')
  unknown = np.setdiff1d(y, classes)
  if len(unknown):
    raise DatasetError(f'{path!r}: {y_key} holds labels {unknown[:10].tolist()} that are not in '
                       f'list_classes {classes.tolist()}')
  # Labels become indices into list_classes (the identity for the course's 0..5).
  labels = np.searchsorted(np.sort(classes), y)
  labels = np.argsort(classes)[labels].astype(np.int32)
  return Split(images=np.ascontiguousarray(x), labels=labels), classes


def _read_array(f: h5py.File, path: str, key: str) -> np.ndarray:
  if key not in f:
    raise DatasetError(f'{path!r}: no dataset {key!r}; found keys {sorted(f.keys())}')
  node = f[key]
  if not isinstance(node, h5py.Dataset):
    raise DatasetError(f'{path!r}: {key!r} is a {type(node).__name__}, expected an HDF5 dataset')
  return np.asarray(node[()])


def _integral_vector(a: np.ndarray, path: str, key: str, expected: str) -> np.ndarray:
  if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
    raise DatasetError(f'{path!r}: {key} is {a.dtype} of shape {a.shape}, expected {expected}')
  return a.astype(np.int64)
