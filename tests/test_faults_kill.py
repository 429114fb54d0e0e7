"""Kill -9 at chosen and random moments, restart with the same command: nothing lost.

One workdir goes through five SIGKILLs in a row (before the first checkpoint, during the
first save, at a seeded random moment, just after a save, and during the final save, which
also retires the oldest of the keep_checkpoints=3 committed ones), each followed by a
restart with the same command; the last restart runs to the end. After every kill, the
newest intact checkpoint must equal the unbroken run's checkpoint of the same step, bit for
bit; at the end the final state and metrics.jsonl must equal the unbroken run's.
"""
import os
import time

import numpy as np
import pytest

import _fault_helpers as fh

# Subprocess runs of experiments/train.py: outside the fast loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow

SEED = 6
RETIRING_SAVE = 'during the final save, which retires an old checkpoint (keep_checkpoints=3)'


def _new_metric_step(at_least: int = 0):
  """Trigger: metrics.jsonl gains a line past everything it held when the launch began."""
  def arm(workdir):
    old_max = max(fh.metric_steps(workdir), default=0)
    return lambda: any(s > old_max and s >= at_least for s in fh.metric_steps(workdir))
  return arm


def _new_tmp_checkpoint(at_least: int = 0):
  """Trigger: a checkpoint directory newer than any committed one is being written."""
  def arm(workdir):
    old_max = max(fh.committed_steps(workdir), default=0)

    def fired():
      steps = [int(name.split('.')[0]) for name in fh.tmp_checkpoints(workdir)]
      return any(s > old_max and s >= at_least for s in steps)
    return fired
  return arm


def _new_committed_checkpoint(at_least: int = 0):
  """Trigger: a newer checkpoint has just been committed (renamed into place)."""
  def arm(workdir):
    old_max = max(fh.committed_steps(workdir), default=0)
    return lambda: any(s > old_max and s >= at_least for s in fh.committed_steps(workdir))
  return arm


def _kill_plan(rng):
  """(description, trigger, extra random delay in s, whether a save must be cut short)."""
  random_step = int(rng.choice([4, 6, 8, 10, 12]))
  return [
      ('before the first checkpoint', _new_metric_step(), 0.0, False),
      ('during the first save', _new_tmp_checkpoint(), 0.0, True),
      (f'at a random moment (step >= {random_step} + a random delay)',
       _new_metric_step(random_step), float(rng.uniform(0.0, 0.1)), False),
      ('just after a save', _new_committed_checkpoint(12), 0.0, False),
      # Three committed checkpoints then (keep_checkpoints=3): the save retires the oldest.
      (RETIRING_SAVE, _new_tmp_checkpoint(fh.TINY_STEPS), 0.0, True),
  ]


def test_sigkill_at_any_moment_then_restart_ends_bitwise_equal(tmp_path, tmp_path_factory):
  reference = fh.reference_run(tmp_path_factory)
  workdir = str(tmp_path / 'run')
  scratch = tmp_path / 'scratch'
  scratch.mkdir()
  outcomes = []
  for description, arm, delay, cuts_a_save in _kill_plan(np.random.default_rng(SEED)):
    fired = arm(workdir)
    process = fh.start_train(workdir, log_path=str(tmp_path / 'train.log'))
    fh.wait_until(fired, process)
    if delay:
      time.sleep(delay)
    fh.kill_now(process)
    assert process.returncode == -9, f'{description}: the run ended before the kill'

    committed, tmp = fh.committed_steps(workdir), fh.tmp_checkpoints(workdir)
    if cuts_a_save:  # The save was really cut short: its tmp dir is there, not committed.
      assert tmp, f'{description}: no half-written checkpoint left'
      assert all(int(n.split('.')[0]) not in committed for n in tmp)
    if description == RETIRING_SAVE:
      assert len(committed) == 3, f'{description}: committed {committed}'
    steps = fh.metric_steps(workdir)
    assert len(steps) == len(set(steps)), f'{description}: a step logged twice: {steps}'
    if committed:  # What the restart will resume from equals the unbroken run's state.
      latest = committed[-1]
      state, meta = fh.read_checkpoint(workdir, latest, scratch)
      ref_state, ref_meta = fh.read_checkpoint(reference, latest, scratch)
      fh.assert_states_equal(state, ref_state)
      assert meta['pending_train'] == ref_meta['pending_train']
    outcomes.append((description, committed, tmp, max(steps, default=0)))

  final = fh.start_train(workdir, log_path=str(tmp_path / 'train.log'))
  assert fh.finish(final) == 0, fh.read_log(final)[-3000:]
  print('\n'.join(f'killed {d}: committed {c}, half-written {t}, last logged step {s}'
                  for d, c, t, s in outcomes))

  assert fh.tmp_checkpoints(workdir) == []
  assert fh.committed_steps(workdir)[-1] == fh.TINY_STEPS
  fh.assert_run_equals(workdir, reference, fh.TINY_STEPS, scratch)
  steps = fh.metric_steps(workdir, strict=True)
  assert steps == sorted(set(steps)) and steps[-1] == fh.TINY_STEPS
  assert os.path.exists(os.path.join(workdir, 'training_curves.png'))
