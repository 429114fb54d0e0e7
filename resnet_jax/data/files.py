"""Checks on a source file before a parser opens it, so that errors name the file and the cause."""
import os

from resnet_jax.errors import DatasetError

# The HDF5 superblock signature. It sits at offset 0, or after a user block at 512, 1024, 2048, ...
HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
_HTML_STARTS = (b'<!doctype html', b'<html', b'<head', b'<body')


def require_dir(path: str, what: str) -> None:
  """Raises DatasetError unless `path` is an existing directory."""
  if not os.path.exists(path):
    raise DatasetError(f'{what} {path!r} does not exist; expected a directory')
  if not os.path.isdir(path):
    raise DatasetError(f'{what} {path!r} is a file; expected a directory')


def require_file(path: str, what: str) -> None:
  """Raises DatasetError unless `path` is an existing, non-empty regular file."""
  if not os.path.exists(path):
    raise DatasetError(f'{what} {path!r} is missing; expected a file there')
  if not os.path.isfile(path):
    raise DatasetError(f'{what} {path!r} is not a regular file; expected a file')
  if os.path.getsize(path) == 0:
    raise DatasetError(f'{what} {path!r} is empty (0 bytes); expected file contents')


def require_hdf5(path: str) -> None:
  """Raises DatasetError unless `path` starts with the HDF5 signature (at 0 or a user-block offset).

  Checked before h5py opens the file: h5py's own message for a non-HDF5 file says little, and the
  usual culprit (an HTML page saved under the dataset's name by a failed download) deserves a name.
  """
  require_file(path, 'HDF5 file')
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(1024)
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
      f.seek(offset)
      if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
        return
      offset = 512 if offset == 0 else offset * 2
  text = head.lstrip(b'\xef\xbb\xbf \t\r\n').lower()
  if text.startswith(_HTML_STARTS):
    raise DatasetError(
        f'{path!r} is an HTML page, not an HDF5 file: probably saved by a failed download '
        f'(an error or login page stored under the dataset\'s name). Download the real file again.')
  raise DatasetError(f'{path!r} is not an HDF5 file: no HDF5 signature {HDF5_SIGNATURE!r} at '
                     f'offset 0 or a user-block offset (512, 1024, ...); it starts with '
                     f'{head[:16]!r}')
