"""CIFAR-10 from a local directory, in the official binary or python layout. Nothing is downloaded.

Binary layout (`cifar-10-batches-bin/`): data_batch_1.bin .. data_batch_5.bin and test_batch.bin,
each a run of 3,073-byte records: one label byte, then 3,072 pixel bytes (channel, row, column).
Python layout (`cifar-10-batches-py/`): data_batch_1 .. data_batch_5 and test_batch, each a
pickled dict with b'data' (uint8 [N, 3072], same pixel order) and b'labels' (N ints). These are
read with an unpickler that only rebuilds numpy arrays, never with plain pickle.load.
"""
import os
import pickle

import numpy as np

from resnet_jax.data.files import require_dir, require_file
from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import DatasetError

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck')
BINARY_DIR = 'cifar-10-batches-bin'
PYTHON_DIR = 'cifar-10-batches-py'
TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_BATCH = 'test_batch'
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES

if int(np.__version__.split('.')[0]) >= 2:
  from numpy._core import multiarray as _multiarray, numeric as _numeric
else:
  from numpy.core import multiarray as _multiarray, numeric as _numeric


def _latin1_encode(text, encoding='utf-8'):
  # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1').
  # Only that use is let through; other codecs have no business in a CIFAR batch.
  if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
    raise pickle.UnpicklingError(f'_codecs.encode with encoding {encoding!r}')
  return text.encode('latin1')


# The globals a pickled dict of numpy arrays needs, under both numpy 1 and numpy 2 names.
# Each maps to the object itself: nothing is imported by name from the file.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): _multiarray._reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _multiarray._reconstruct,
    ('numpy.core.numeric', '_frombuffer'): _numeric._frombuffer,
    ('numpy._core.numeric', '_frombuffer'): _numeric._frombuffer,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
  """Unpickles plain containers and numpy arrays; any other global is refused."""

  def __init__(self, file, path: str):
    # encoding='bytes': the official files were written by Python 2; their str become bytes.
    super().__init__(file, encoding='bytes')
    self._path = path

  def find_class(self, module, name):
    allowed = _ALLOWED_GLOBALS.get((module, name))
    if allowed is None:
      raise DatasetError(
          f'{self._path!r}: the pickle asks for the global {module}.{name}, which a CIFAR-10 '
          f'batch never needs (expected only numpy array reconstruction); refused without '
          f'running it, since unpickling it could execute arbitrary code')
    return allowed

  def persistent_load(self, pid):
    raise DatasetError(f'{self._path!r}: the pickle holds a persistent id {pid!r}; expected a '
                       f'plain dict of arrays')


def load_cifar10(data_dir: str) -> Dataset:
  """Reads CIFAR-10 from `data_dir`: the parent of a batches directory or the batches directory.

  The binary layout is preferred where both are present (it needs no unpickling).
  Returns uint8 images [N, 32, 32, 3] (50,000 train / 10,000 test for the official files).
  """
  layout, batches_dir = find_cifar10_batches(data_dir)
  if layout == 'binary':
    read, suffix = read_binary_batch, '.bin'
  else:
    read, suffix = read_python_batch, ''
  train = [read(os.path.join(batches_dir, name + suffix)) for name in TRAIN_BATCHES]
  test = read(os.path.join(batches_dir, TEST_BATCH + suffix))
  train_split = Split(images=np.concatenate([s.images for s in train]),
                      labels=np.concatenate([s.labels for s in train]))
  return Dataset(train=train_split, test=test, class_names=CLASS_NAMES,
                 source=f'CIFAR-10 ({layout} layout) from {batches_dir}')


def find_cifar10_batches(data_dir: str) -> tuple[str, str]:
  """('binary' | 'python', the directory holding the batch files)."""
  require_dir(data_dir, 'CIFAR-10 directory')
  layouts = (('binary', BINARY_DIR, 'data_batch_1.bin'), ('python', PYTHON_DIR, 'data_batch_1'))
  for layout, _, marker in layouts:
    if os.path.isfile(os.path.join(data_dir, marker)):
      return layout, data_dir
  for layout, subdir, _ in layouts:
    if os.path.isdir(os.path.join(data_dir, subdir)):
      return layout, os.path.join(data_dir, subdir)
  raise DatasetError(
      f'{data_dir!r} holds no CIFAR-10 batches: expected a {BINARY_DIR}/ or {PYTHON_DIR}/ '
      f'directory, or the batch files themselves (data_batch_1.bin or data_batch_1)')


def read_binary_batch(path: str) -> Split:
  """One batch file of the binary layout: records of a label byte and 3,072 CHW pixel bytes."""
  require_file(path, 'CIFAR-10 batch')
  size = os.path.getsize(path)
  if size % RECORD_BYTES:
    raise DatasetError(f'{path!r}: {size} bytes, expected a multiple of {RECORD_BYTES} '
                       f'(1 label byte + {IMAGE_BYTES} pixel bytes per image)')
  records = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
  return _to_split(path, records[:, 1:], records[:, 0])


def read_python_batch(path: str) -> Split:
  """One batch file of the python layout, through the array-only unpickler."""
  require_file(path, 'CIFAR-10 batch')
  try:
    with open(path, 'rb') as f:
      batch = _ArrayOnlyUnpickler(f, path).load()
  except DatasetError:
    raise
  except Exception as e:  # Truncated or garbled pickles fail in many ways; all mean a bad file.
    raise DatasetError(f'{path!r}: not a readable CIFAR-10 python batch ({type(e).__name__}: '
                       f'{e}); expected a pickled dict with data and labels') from e
  if not isinstance(batch, dict):
    raise DatasetError(f'{path!r}: the pickle holds a {type(batch).__name__}, expected a dict '
                       f'with data and labels')
  data, labels = _get(batch, path, 'data'), _get(batch, path, 'labels')
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
      data.shape[1] != IMAGE_BYTES):
    found = f'{data.dtype} array {data.shape}' if isinstance(data, np.ndarray) else type(
        data).__name__
    raise DatasetError(f'{path!r}: data is {found}, expected a uint8 array [N, {IMAGE_BYTES}]')
  if not isinstance(labels, (list, np.ndarray)) or not all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
    raise DatasetError(f'{path!r}: labels is not a list of integers, expected N integer labels')
  labels = np.asarray(labels, dtype=np.int64).reshape(-1)
  if len(labels) != len(data):
    raise DatasetError(f'{path!r}: {len(data)} images but {len(labels)} labels, expected equal '
                       f'counts')
  return _to_split(path, data, labels)


def _get(batch: dict, path: str, key: str):
  # Python 2 pickles (the official files) have bytes keys; a Python 3 re-pickle may have str.
  for k in (key.encode(), key):
    if k in batch:
      return batch[k]
  raise DatasetError(f'{path!r}: no {key!r} entry; found keys {sorted(map(repr, batch))}')


def _to_split(path: str, pixels: np.ndarray, labels: np.ndarray) -> Split:
  if len(labels) == 0:
    raise DatasetError(f'{path!r}: no images, expected at least one')
  if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
    raise DatasetError(f'{path!r}: labels span [{labels.min()}, {labels.max()}], expected '
                       f'[0, {len(CLASS_NAMES) - 1}]')
  images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return Split(images=np.ascontiguousarray(images), labels=labels.astype(np.int32))
