"""Broken checkpoints: a damaged latest checkpoint is set aside with a warning naming it, the
newest intact one is restored, and no good checkpoint is ever deleted in its favour.

In-process runs of a small model (18 steps, checkpoints at 4, 8, 12, 16 and 18).
"""
import glob
import json
import logging
import os
import shutil

import pytest

import _fault_helpers as fh
import helpers
from resnet_jax.errors import CheckpointError
from resnet_jax.train import loop

TOTAL = 18

# A restore that fails part-way leaves tensorstore reads that finish after Orbax closed its
# event loop; they can only report that as an 'exception ignored' at garbage collection.
# Whole training runs: outside the fast loop (pytest -m "not slow").
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    'ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning')]


def _run(workdir, model=None, **overrides):
  return loop.train_and_evaluate(helpers.fault_config(**overrides), str(workdir),
                                 model=model or helpers.TinyNet(),
                                 dataset=helpers.fault_dataset())


@pytest.fixture(scope='module')
def unbroken(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('unbroken') / 'run'
  result = _run(workdir)
  assert result['step'] == TOTAL
  assert fh.committed_steps(workdir) == [4, 8, 12, 16, 18]
  return workdir


def _data_files(step_dir):
  """The files holding the state's array bytes (tensorstore OCDBT data files)."""
  files = [p for p in glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True)
           if os.path.isfile(p)]
  assert files, f'no data files under {step_dir}'
  return files


def _truncate_data(step_dir):
  for path in _data_files(step_dir):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


def _garble_data(step_dir):
  """Same size, different bytes in the middle of every data file."""
  for path in _data_files(step_dir):
    with open(path, 'r+b') as f:
      data = bytearray(f.read())
      middle = len(data) // 2
      data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
      f.seek(0)
      f.write(data)


def _garble_meta(step_dir):
  path = glob.glob(os.path.join(step_dir, 'meta', '*'))
  path = [p for p in path if os.path.isfile(p) and 'commit' not in p][0]
  with open(path, 'w') as f:
    f.write('{"step": 18, "checks')


def _contradict_a_checksum(step_dir):
  """Arrays that read back fine but differ from what was saved (silent corruption the
  storage format does not catch), seen from the reader's side: one recorded CRC differs."""
  path = os.path.join(step_dir, 'meta', 'metadata')
  with open(path) as f:
    meta = json.load(f)
  name = sorted(meta['checksums'])[0]
  meta['checksums'][name] ^= 1
  with open(path, 'w') as f:
    json.dump(meta, f)


def _remove_state_metadata(step_dir):
  """A half-written item: the state's tree metadata never made it to disk."""
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def _remove_commit_markers(step_dir):
  """Half-written under commit-file atomicity: no commit_success.txt, data files partial."""
  for path in glob.glob(os.path.join(step_dir, '**', 'commit_success.txt'), recursive=True):
    os.remove(path)
  _truncate_data(step_dir)


def _leave_as_tmp_dir(step_dir):
  """A save killed before its rename: only the orbax tmp directory exists."""
  os.replace(step_dir, step_dir + fh.TMP_MARKER)


def _resume_after_damage(unbroken, tmp_path, caplog, damage: dict, expect_resume: int):
  """Copies the unbroken run, damages checkpoints {step: how}, reruns; checks the outcome."""
  workdir = tmp_path / 'run'
  shutil.copytree(unbroken, workdir)
  step_dir = lambda step: os.path.join(fh.checkpoint_dir(workdir), str(step))
  damaged = {}
  for step, how in damage.items():
    how(step_dir(step))
    if os.path.exists(step_dir(step)):
      damaged[step] = fh.file_hashes(step_dir(step))
  intact_steps = [s for s in (4, 8, 12, 16, 18) if s not in damage]
  intact = fh.file_hashes(*map(step_dir, intact_steps))

  with caplog.at_level(logging.WARNING, logger='resnet_jax'):
    result = _run(workdir)
  assert result['resumed_from'] == expect_resume and result['step'] == TOTAL
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  for step in damage:  # Each one named in a warning.
    assert any(step_dir(step) in w for w in warnings), (step, warnings)
  for step, hashes in damaged.items():  # Set aside byte for byte, never deleted.
    moved = glob.glob(os.path.join(workdir, 'checkpoints_broken', f'{step}-*'))
    assert len(moved) == 1
    assert sorted(fh.file_hashes(moved[0]).values()) == sorted(hashes.values())
  # Every intact checkpoint is still there, unchanged; the run redid the lost steps exactly.
  assert fh.file_hashes(*map(step_dir, intact_steps)) == intact
  assert fh.committed_steps(workdir) == [4, 8, 12, 16, 18]
  assert fh.tmp_checkpoints(workdir) == []
  fh.assert_run_equals(workdir, unbroken, TOTAL, tmp_path)
  return warnings


def test_corrupted_checkpoints_are_set_aside_and_the_newest_intact_restored(
    unbroken, tmp_path, caplog):
  warnings = _resume_after_damage(
      unbroken, tmp_path, caplog,
      {18: _truncate_data, 16: _garble_data, 12: _garble_meta, 8: _contradict_a_checksum},
      expect_resume=4)
  assert any('do not match their checksums' in w for w in warnings), warnings


def test_half_written_checkpoints_are_skipped_and_the_newest_intact_restored(
    unbroken, tmp_path, caplog):
  warnings = _resume_after_damage(
      unbroken, tmp_path, caplog,
      {18: _leave_as_tmp_dir, 16: _remove_state_metadata, 12: _remove_commit_markers},
      expect_resume=8)
  assert any('half-written' in w for w in warnings)


def test_checkpoint_of_another_model_names_the_first_mismatch(unbroken, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(unbroken, workdir)
  before = fh.file_hashes(workdir)
  with pytest.raises(CheckpointError) as info:
    _run(workdir, model=helpers.TinyNet(features=7))
  message = str(info.value)
  assert 'params/bn/bias' in message  # Sorted order: the first parameter that differs.
  assert '(8,)' in message and '(7,)' in message
  assert os.path.join(str(workdir), 'checkpoints', str(TOTAL)) in message
  assert fh.file_hashes(workdir) == before
