"""A damaged checkpoint is set aside quietly: one warning naming it, where it went and the step
restored instead; nothing else from the checkpoint library, now or at garbage collection."""
import gc
import glob
import logging
import os
import sys
import threading
import types

import numpy as np
import pytest

from helpers import LogRecords
from resnet_jax.train import checkpoint as checkpoint_lib

# A failed restore's leftover reads may only be reported at garbage collection.
pytestmark = pytest.mark.filterwarnings(
    'ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning')


def _state(step):
  rng = np.random.default_rng(step)
  return {'params': {'conv': {'kernel': rng.normal(size=(3, 3, 3, 64)).astype(np.float32)},
                     'head': {'bias': rng.normal(size=(10,)).astype(np.float32)}},
          'step': np.asarray(step, np.int32)}


def test_truncated_checkpoint_gives_one_warning_and_the_older_step_is_restored(tmp_path, capfd):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3, async_save=False)
  for step in (2, 3):
    checkpointer.save(step, _state(step), {})
  checkpointer.wait()
  checkpointer.close()
  for path in glob.glob(str(tmp_path / 'checkpoints' / '3' / 'state' / '**' / 'd' / '*'),
                        recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  capfd.readouterr()

  records = LogRecords()
  for name in ('', 'absl', 'resnet_jax'):
    logging.getLogger(name).addHandler(records)
  try:
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
    step, state, _ = checkpointer.restore_latest(_state(0))
    checkpointer.close()
    gc.collect()
  finally:
    for name in ('', 'absl', 'resnet_jax'):
      logging.getLogger(name).removeHandler(records)

  assert step == 2
  np.testing.assert_array_equal(state['params']['conv']['kernel'],
                                _state(2)['params']['conv']['kernel'])
  moved = glob.glob(str(tmp_path / 'checkpoints_broken' / '3-*'))
  assert len(moved) == 1
  warnings = [line for line in records.lines if not line.startswith(('DEBUG', 'INFO'))]
  assert len(set(warnings)) == 1, warnings  # (The root and resnet_jax handlers see it both.)
  warning = warnings[0]
  assert warning.startswith('WARNING resnet_jax.train.checkpoint: ')
  assert str(tmp_path / 'checkpoints' / '3') in warning and moved[0] in warning
  assert warning.endswith('restored step 2 instead') and '\n' not in warning
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Event loop is closed' not in err, err


def test_late_event_loop_errors_are_dropped_and_others_still_reported(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  monkeypatch.setattr(threading, 'excepthook', seen.append)
  checkpoint_lib.silence_late_read_errors()
  checkpoint_lib.silence_late_read_errors()  # Installed once.
  late = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'))
  other = types.SimpleNamespace(exc_value=RuntimeError('something else'))
  sys.unraisablehook(late)
  sys.unraisablehook(other)
  threading.excepthook(late)
  threading.excepthook(other)
  assert seen == [other, other]


def test_only_the_checkpoint_librarys_reports_of_a_failed_write_are_dropped(tmp_path):
  """What a Checkpointer that writes installs: orbax's records of a write that failed for
  lack of space go (the Checkpointer raises it as one StorageError); every other record
  passes, a full disk named by another library's record or orbax's other errors included."""
  checkpoint_lib.Checkpointer(str(tmp_path), keep=1).close()
  orbax_file = os.path.join(os.path.dirname(checkpoint_lib.ocp.__file__), '_src', 'future.py')
  full = "Failed writing: No space left on device [os_error_code='28']"
  try:
    raise ValueError(f'RESOURCE_EXHAUSTED: {full}')
  except ValueError:
    failure = sys.exc_info()

  def record(logger, message, pathname=orbax_file, exc_info=None):
    return logging.LogRecord(logger, logging.ERROR, pathname, 1, message, (), exc_info)

  dropped = [record('absl', f'_SignalingThread.run() raised an exception: {full}'),
             record('absl', 'Save Finalize thread (save_finalize) failed.', exc_info=failure),
             record('asyncio', 'Task exception was never retrieved', __file__, failure)]
  kept = [record('absl', 'Failed to restore: OUT_OF_RANGE (truncated file)'),
          record('absl', f'a note from another library: {full}', __file__),
          record('resnet_jax.train.loop', full, __file__),
          record('absl', 'Save Finalize thread (save_finalize) failed.',
                 exc_info=(KeyError, KeyError('x'), None))]
  for item in dropped + kept:
    assert bool(logging.getLogger(item.name).filter(item)) == (item in kept), item.getMessage()
