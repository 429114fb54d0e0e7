"""Atomic writes: whole files or none, readable by others like any file the run writes; write
failures (no space, no permission) told from other errors, in the words of the libraries that
report them."""
import errno
import os
import stat

import matplotlib
import pytest

from resnet_jax import storage

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_mode_open_gives_not_a_private_one(tmp_path):
  previous = os.umask(0o022)
  try:
    reference = tmp_path / 'plain.txt'
    reference.write_text('x')
    storage.write_json_atomic(str(tmp_path / 'index.json'), {'a': 1})
    fig = plt.figure()
    storage.save_figure_atomic(fig, str(tmp_path / 'curves.png'))
    plt.close(fig)
  finally:
    os.umask(previous)
  assert _mode(reference) == 0o644
  assert _mode(tmp_path / 'index.json') == 0o644 and _mode(tmp_path / 'curves.png') == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'results.json'
  storage.write_json_atomic(str(path), {'kept': True})
  with pytest.raises(TypeError):  # Fails inside the write, after the temporary exists.
    storage.write_bytes_atomic(str(path), 'not bytes')
  assert path.read_text() == '{\n "kept": true\n}\n'
  assert os.listdir(tmp_path) == ['results.json']


@pytest.mark.parametrize('error,number', [
    (OSError(errno.ENOSPC, 'No space left on device'), errno.ENOSPC),
    (PermissionError(errno.EACCES, 'Permission denied', '/x'), errno.EACCES),
    # tensorstore under Orbax: its status code and the OS's number in the text.
    (ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database: Failed to '
                "write 1006104 bytes to file 6: No space left on device [os_error_code='28']"),
     errno.ENOSPC),
    (ValueError("OUT_OF_RANGE: Error writing \"w/0\": File too large [os_error_code='27']"),
     errno.EFBIG),
    # array_record: the OS's words in a RuntimeError.
    (RuntimeError('Failed to write: Disk quota exceeded'), errno.EDQUOT),
    (FileNotFoundError(errno.ENOENT, 'No such file or directory', '/x'), None),
    (ValueError('RESOURCE_EXHAUSTED: out of memory'), None),
    (KeyError('step'), None),
])
def test_write_failures_are_told_from_other_errors(error, number):
  assert storage.write_failure_errno(error) == number
  failure = storage.write_failure('/data/x', error)
  assert (failure is None) == (number is None)
  if failure is not None:
    assert str(failure).startswith(f'/data/x: cannot be written ({os.strerror(number)}; ')


def test_a_write_failure_is_found_in_the_causes_of_a_library_error():
  try:
    try:
      raise OSError(errno.ENOSPC, 'No space left on device')
    except OSError as error:
      raise RuntimeError('commit failed') from error
  except RuntimeError as wrapped:
    assert storage.write_failure_errno(wrapped) == errno.ENOSPC


def test_the_message_says_what_to_do_for_space_and_for_permission(tmp_path):
  space = storage.write_error(str(tmp_path / 'a'), OSError(errno.ENOSPC, 'No space left on '
                                                           'device'), note='rerun it')
  assert str(space) == (f'{tmp_path}/a: cannot be written (No space left on device; '
                        f'{storage.free_space(str(tmp_path))} on its filesystem); expected room '
                        'for it (free space there, or write elsewhere); rerun it')
  assert space.errno == errno.ENOSPC and isinstance(space, OSError)
  denied = storage.write_error(str(tmp_path / 'a'), OSError(errno.EROFS, 'Read-only file '
                                                            'system'))
  assert str(denied).endswith('; expected a path this process may write')
  unnamed = storage.write_error(None, OSError(errno.ENOSPC, 'No space left on device'))
  assert str(unnamed).startswith('a file cannot be written (No space left on device; the OS '
                                 'did not say which file)')
