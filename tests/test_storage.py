"""Atomic writes: whole files or none, readable by others like any file the run writes."""
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
