"""CIFAR-10 from local files: the binary record layout, and the python layout through an unpickler
that rebuilds arrays and refuses everything else."""
import os
import pickle

import numpy as np
import pytest

from resnet_jax.data import DatasetError, cifar10, load_cifar10

BATCH_SIZES = (3, 2, 4, 1, 2)  # Five small training batches.
NUM_TEST = 3


def batches(seed=0):
  """(name, CHW pixels uint8 [n, 3, 32, 32], labels) for the five train batches and the test one."""
  rng = np.random.default_rng(seed)
  out = []
  for name, n in zip(cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,), BATCH_SIZES + (NUM_TEST,)):
    out.append((name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.int64)))
  return out


def write_binary(directory, content=None):
  """The official binary layout: per image one label byte, then 1024 R, 1024 G, 1024 B bytes."""
  os.makedirs(directory, exist_ok=True)
  for name, pixels, labels in content or batches():
    with open(os.path.join(directory, name + '.bin'), 'wb') as f:
      for pixel, label in zip(pixels, labels):
        f.write(bytes([label]))
        f.write(pixel.tobytes())  # C order of (3, 32, 32): channel, row, column.


def write_python(directory, protocol=2, key=lambda k: k.encode()):
  os.makedirs(directory, exist_ok=True)
  for name, pixels, labels in batches():
    batch = {key('batch_label'): b'a batch', key('labels'): [int(v) for v in labels],
             key('data'): pixels.reshape(len(pixels), -1),
             key('filenames'): [b'x.png'] * len(labels)}
    with open(os.path.join(directory, name), 'wb') as f:
      pickle.dump(batch, f, protocol=protocol)


def expected_splits():
  content = batches()
  train = content[:5]
  hwc = lambda p: p.transpose(0, 2, 3, 1)
  return (np.concatenate([hwc(p) for _, p, _ in train]), np.concatenate([l for _, _, l in train]),
          hwc(content[5][1]), content[5][2])


def check(data):
  train_x, train_y, test_x, test_y = expected_splits()
  assert data.train.images.shape == (sum(BATCH_SIZES), 32, 32, 3)
  assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int32
  np.testing.assert_array_equal(data.train.images, train_x)
  np.testing.assert_array_equal(data.train.labels, train_y)
  np.testing.assert_array_equal(data.test.images, test_x)
  np.testing.assert_array_equal(data.test.labels, test_y)
  assert data.class_names[0] == 'airplane' and len(data.class_names) == 10


@pytest.mark.parametrize('point_at', ['parent', 'batches'])
def test_binary_layout_from_the_parent_or_the_batches_directory(tmp_path, point_at):
  write_binary(tmp_path / 'cifar-10-batches-bin')
  data = load_cifar10(str(tmp_path if point_at == 'parent' else tmp_path / 'cifar-10-batches-bin'))
  check(data)
  assert 'binary' in data.source


def test_binary_records_are_read_channel_row_column(tmp_path):
  # One hand-made record: label 7, red plane 0..., a marked pixel at channel 2, row 5, column 9.
  record = np.zeros(3072, np.uint8)
  record[2 * 1024 + 5 * 32 + 9] = 200
  record[0 * 1024 + 0 * 32 + 1] = 17
  content = [(name, record.reshape(1, 3, 32, 32), np.array([7])) for name, _, _ in batches()]
  write_binary(tmp_path, content)
  image = load_cifar10(str(tmp_path)).test.images[0]
  assert image[5, 9, 2] == 200 and image[0, 1, 0] == 17
  assert image.sum() == 217
  assert load_cifar10(str(tmp_path)).test.labels[0] == 7


@pytest.mark.parametrize('protocol, key', [(2, lambda k: k.encode()), (5, lambda k: k.encode()),
                                           (4, str)])
def test_python_layout_round_trip(tmp_path, protocol, key):
  write_python(tmp_path / 'cifar-10-batches-py', protocol=protocol, key=key)
  data = load_cifar10(str(tmp_path))
  check(data)
  assert 'python' in data.source


def test_python_layout_never_uses_plain_pickle_load(tmp_path, monkeypatch):
  write_python(tmp_path)

  def forbidden(*args, **kwargs):
    raise AssertionError('plain pickle.load called on a user file')

  monkeypatch.setattr(pickle, 'load', forbidden)
  monkeypatch.setattr(pickle, 'loads', forbidden)
  check(load_cifar10(str(tmp_path)))


class _RunsACommand:
  """Unpickling this runs a shell command: what a malicious batch file would do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


class _CallsEval:

  def __reduce__(self):
    return eval, ('__import__("os").getcwd()',)


@pytest.mark.parametrize('where', ['whole file', 'inside the labels'])
def test_a_pickle_that_would_execute_code_is_refused(tmp_path, where):
  write_python(tmp_path)
  marker = tmp_path / 'pwned'
  payload = _RunsACommand(marker)
  if where == 'inside the labels':
    payload = {b'data': np.zeros((1, 3072), np.uint8), b'labels': [payload]}
  path = tmp_path / 'data_batch_2'
  path.write_bytes(pickle.dumps(payload, protocol=2))
  with pytest.raises(DatasetError) as error:
    load_cifar10(str(tmp_path))
  message = str(error.value)
  assert str(path) in message and 'system' in message and 'refused' in message
  assert not marker.exists()


def test_other_globals_are_refused_too(tmp_path):
  write_python(tmp_path)
  path = tmp_path / 'test_batch'
  path.write_bytes(pickle.dumps(_CallsEval()))
  with pytest.raises(DatasetError, match='builtins.eval') as error:
    load_cifar10(str(tmp_path))
  assert str(path) in str(error.value)


def test_codecs_encode_is_only_allowed_for_latin1(tmp_path):
  write_python(tmp_path)
  # A protocol-0 pickle calling _codecs.encode('x', 'rot13'): allowed global, refused use.
  (tmp_path / 'test_batch').write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
  with pytest.raises(DatasetError, match='test_batch'):
    load_cifar10(str(tmp_path))


def _binary_batch_size_wrong(directory):
  write_binary(directory)
  path = directory / 'data_batch_3.bin'
  path.write_bytes(path.read_bytes()[:-5])
  return path, 'multiple of 3073'


def _binary_label_out_of_range(directory):
  content = batches()
  content[5][2][0] = 10
  write_binary(directory, content)
  return directory / 'test_batch.bin', 'labels span'


def _binary_batch_missing(directory):
  write_binary(directory)
  os.remove(directory / 'data_batch_5.bin')
  return directory / 'data_batch_5.bin', 'missing'


def _python_not_a_dict(directory):
  write_python(directory)
  (directory / 'data_batch_1').write_bytes(pickle.dumps([1, 2, 3]))
  return directory / 'data_batch_1', 'expected a dict'


def _python_wrong_data_shape(directory):
  write_python(directory)
  batch = {b'data': np.zeros((2, 1024), np.uint8), b'labels': [0, 1]}
  (directory / 'data_batch_1').write_bytes(pickle.dumps(batch, protocol=2))
  return directory / 'data_batch_1', 'expected a uint8 array [N, 3072]'


def _python_label_count_wrong(directory):
  write_python(directory)
  batch = {b'data': np.zeros((2, 3072), np.uint8), b'labels': [0]}
  (directory / 'data_batch_1').write_bytes(pickle.dumps(batch, protocol=2))
  return directory / 'data_batch_1', '2 images but 1 labels'


def _python_garbage(directory):
  write_python(directory)
  (directory / 'test_batch').write_bytes(b'\x80\x02}q\x00(X')  # Truncated.
  return directory / 'test_batch', 'not a readable CIFAR-10 python batch'


def _python_missing_labels(directory):
  write_python(directory)
  (directory / 'test_batch').write_bytes(pickle.dumps({b'data': np.zeros((1, 3072), np.uint8)}))
  return directory / 'test_batch', "no 'labels' entry"


BAD_CASES = {f.__name__.lstrip('_'): f for f in (
    _binary_batch_size_wrong, _binary_label_out_of_range, _binary_batch_missing,
    _python_not_a_dict, _python_wrong_data_shape, _python_label_count_wrong, _python_garbage,
    _python_missing_labels)}


@pytest.mark.parametrize('case', sorted(BAD_CASES))
def test_bad_batches_raise_dataset_error_naming_the_file(tmp_path, case):
  path, expected = BAD_CASES[case](tmp_path)
  with pytest.raises(DatasetError) as error:
    load_cifar10(str(tmp_path))
  assert str(path) in str(error.value) and expected in str(error.value)


def test_a_directory_without_batches_is_named(tmp_path):
  with pytest.raises(DatasetError, match='cifar-10-batches-bin') as error:
    load_cifar10(str(tmp_path))
  assert str(tmp_path) in str(error.value)
  with pytest.raises(DatasetError, match='does not exist'):
    load_cifar10(str(tmp_path / 'nowhere'))


def test_binary_layout_is_preferred_when_both_are_present(tmp_path):
  write_binary(tmp_path / 'cifar-10-batches-bin')
  (tmp_path / 'cifar-10-batches-py').mkdir()  # Empty: reading it would fail.
  assert 'binary' in load_cifar10(str(tmp_path)).source
