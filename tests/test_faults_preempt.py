"""Preemption: SIGTERM or SIGINT finishes the step, saves, exits 0 naming the checkpoint.

One workdir is stopped twice (SIGTERM, then SIGINT after the restart) and then run to the
end; the result must equal the unbroken run's, bit for bit.
"""
import os
import re
import signal
import time

import pytest

import _fault_helpers as fh

# Subprocess runs of experiments/train.py: outside the fast loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow


def _stop_with(number, workdir, tmp_path, after_step: int):
  process = fh.start_train(workdir, log_path=str(tmp_path / f'{number.name}.log'))
  old_max = max(fh.metric_steps(workdir), default=0)
  fh.wait_until(lambda: any(s > old_max and s >= after_step for s in fh.metric_steps(workdir)),
                process)
  logged_at_signal = max(fh.metric_steps(workdir))
  sent = time.monotonic()
  process.send_signal(number)
  code = fh.finish(process, timeout=60)
  seconds = time.monotonic() - sent
  log = fh.read_log(process)
  assert code == 0, log[-3000:]
  match = re.search(rf'stopped by {number.name} at step (\d+); checkpoint saved to (\S+)', log)
  assert match, log[-3000:]
  step, path = int(match.group(1)), match.group(2)
  assert path == os.path.join(os.path.abspath(workdir), 'checkpoints', str(step))
  # Prompt, counted in steps rather than seconds (a busy machine stretches seconds, not
  # steps): the step under way when the signal came completed, and the run stopped there
  # instead of running on to the end. The exit's wall time is printed, not asserted.
  assert step >= logged_at_signal
  assert step < fh.TINY_STEPS
  assert fh.committed_steps(workdir)[-1] == step and fh.tmp_checkpoints(workdir) == []
  state, _ = fh.read_checkpoint(workdir, step, tmp_path)
  assert int(state['step']) == step
  assert f'checkpoint: {path}' in log  # The closing summary names it too.
  return step, seconds


def test_sigterm_and_sigint_save_exit_zero_and_resume_exactly(tmp_path, tmp_path_factory):
  reference = fh.reference_run(tmp_path_factory)
  workdir = str(tmp_path / 'run')
  first, term_seconds = _stop_with(signal.SIGTERM, workdir, tmp_path, after_step=5)
  second, int_seconds = _stop_with(signal.SIGINT, workdir, tmp_path, after_step=first + 6)
  assert second > first
  print(f'\nSIGTERM: saved step {first}, exited after {term_seconds:.1f} s; '
        f'SIGINT: saved step {second}, exited after {int_seconds:.1f} s')

  done = fh.run_train(workdir)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'resumed from: step {second}' in done.stdout
  fh.assert_run_equals(workdir, reference, fh.TINY_STEPS, tmp_path)
