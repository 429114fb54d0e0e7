"""One run per workdir, and nothing left behind by a run that never started training."""
import errno
import fcntl
import logging
import os

import pytest

import helpers as fx
from _fault_helpers import file_hashes
from resnet_jax.errors import ConfigError, WorkdirBusyError
from resnet_jax.train import loop, workdir_claim
from resnet_jax.train.workdir_claim import LOCK_NAME, WorkdirClaim, WorkdirLock


def _run(workdir, dataset=None, **overrides):
  return loop.train_and_evaluate(fx.fault_config(**overrides), str(workdir), model=fx.TinyNet(),
                                 dataset=dataset or fx.fault_dataset())


def test_a_held_lock_refuses_a_second_run_naming_the_holder(tmp_path):
  workdir = tmp_path / 'run'
  holder = WorkdirLock(str(workdir))
  os.makedirs(workdir)
  (workdir / 'notes.txt').write_text('mine')
  holder.acquire()
  try:
    before = file_hashes(workdir)
    with pytest.raises(WorkdirBusyError, match=rf"workdir '{workdir}' is in use by another run "
                       rf'\(pid {os.getpid()} on host .+\)'):
      _run(workdir)
    assert file_hashes(workdir) == before  # Nothing written, nothing removed.
    assert sorted(os.listdir(workdir)) == [LOCK_NAME, 'notes.txt']
  finally:
    holder.release()
  # Released (as the kernel does when the holder dies): the lock can be taken again.
  with WorkdirClaim(str(workdir)) as claim:
    claim.keep()


def test_a_lock_removed_by_a_giving_up_run_is_not_shared(tmp_path):
  # A run that gives up unlinks the lock file it created; a run that opened the old file
  # must not think it holds the lock while a third run locks the new file.
  workdir = tmp_path / 'run'
  first = WorkdirClaim(str(workdir)).__enter__()
  first.__exit__(None, None, None)  # Not kept: removes .lock and the directory.
  assert not workdir.exists()
  with WorkdirClaim(str(workdir)) as claim:
    with pytest.raises(WorkdirBusyError):
      WorkdirClaim(str(workdir)).__enter__()
    claim.keep()
  assert sorted(os.listdir(workdir)) == [LOCK_NAME]


@pytest.mark.parametrize('problem', ['batch_larger_than_the_data', 'images_of_another_size'])
def test_a_rejected_run_leaves_no_new_directory(tmp_path, problem):
  workdir = tmp_path / 'new' / 'run'
  with pytest.raises(ConfigError):
    if problem == 'batch_larger_than_the_data':
      # Larger than the data: rejected after loading it.
      _run(workdir, **{'train.batch_size': 4096})
    else:
      _run(workdir, **{'data.image_size': 16})  # The data's images are 8x8.
  assert not (tmp_path / 'new').exists()  # Nor the parent the run made for it.


def test_a_rejected_run_keeps_the_parents_that_were_there(tmp_path):
  (tmp_path / 'kept').mkdir()
  with pytest.raises(ConfigError):
    _run(tmp_path / 'kept' / 'new' / 'run', **{'train.batch_size': 4096})
  assert sorted(os.listdir(tmp_path)) == ['kept'] and not os.listdir(tmp_path / 'kept')


def test_a_rejected_run_leaves_an_existing_workdir_as_it_was(tmp_path):
  workdir = tmp_path / 'run'
  os.makedirs(workdir / 'plots')
  (workdir / 'notes.txt').write_text('mine')
  before = file_hashes(workdir)
  with pytest.raises(ConfigError):
    _run(workdir, **{'data.image_size': 16})
  assert file_hashes(workdir) == before
  assert sorted(os.listdir(workdir)) == ['notes.txt', 'plots']


def test_a_stop_during_start_up_saves_nothing_and_leaves_no_directory(tmp_path, monkeypatch):
  asked = []

  def stop_after_loading(self):
    asked.append(1)
    return len(asked) >= 2  # The first question is before loading, the second after.

  monkeypatch.setattr(loop.StopRequest, 'requested_during_startup', stop_after_loading)
  workdir = tmp_path / 'run'
  result = _run(workdir)
  assert result['preempted'] and result['stopped_before_start']
  assert result['step'] == 0 and result['checkpoint'] is None
  assert not workdir.exists()


def _flock_failing_with(code):
  def flock(fd, operation):
    raise OSError(code, os.strerror(code))
  return flock


@pytest.mark.parametrize('code', [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP],
                         ids=['ENOSYS', 'ENOLCK', 'EOPNOTSUPP'])
def test_a_filesystem_without_locks_warns_in_one_line_and_goes_on(tmp_path, monkeypatch,
                                                                  caplog, code):
  monkeypatch.setattr(workdir_claim.fcntl, 'flock', _flock_failing_with(code))
  workdir = tmp_path / 'lustre' / 'run'
  with caplog.at_level(logging.WARNING, logger=workdir_claim.__name__):
    with WorkdirClaim(str(workdir)) as claim:
      claim.keep()
  warnings = [r for r in caplog.records if r.name == workdir_claim.__name__]
  assert len(warnings) == 1 and '\n' not in warnings[0].getMessage()
  assert 'cannot lock' in warnings[0].getMessage() and os.strerror(code) in warnings[0].getMessage()
  # The holder is still written down, for whoever looks.
  assert (workdir / LOCK_NAME).read_text().startswith(f'pid {os.getpid()} on host ')
  # Not kept, the claim still removes what it added.
  with WorkdirClaim(str(tmp_path / 'gone')):
    pass
  assert not (tmp_path / 'gone').exists()


@pytest.mark.parametrize('code, refusal', [
    (errno.EWOULDBLOCK, WorkdirBusyError), (errno.EIO, ConfigError), (errno.EBADF, ConfigError)])
def test_busy_and_other_lock_errors_still_refuse(tmp_path, monkeypatch, code, refusal):
  monkeypatch.setattr(workdir_claim.fcntl, 'flock', _flock_failing_with(code))
  with pytest.raises(refusal, match='in use by another run' if refusal is WorkdirBusyError
                     else 'cannot be written'):
    WorkdirClaim(str(tmp_path / 'run')).__enter__()
  assert workdir_claim.fcntl is fcntl  # The module's own flock was patched, not a copy.
