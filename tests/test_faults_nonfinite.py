"""Non-finite losses: the run stops naming the step and never checkpoints a non-finite state;
nan_policy='skip' drops those updates and counts them in metrics.jsonl.
"""
import os
import re

import jax
import numpy as np
import pytest

import _fault_helpers as fh
import helpers
from resnet_jax.data import pipeline
from resnet_jax.errors import NonFiniteLossError
from resnet_jax.train import loop

# Whole training runs, one through a subprocess: outside the fast loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

BATCH, NUM_TRAIN, EPOCHS = 8, helpers.FAULT_NUM_TRAIN, 3
PER_EPOCH = NUM_TRAIN // BATCH
BAD_STEP_IN_EPOCH_0 = 5  # 0-based: the update that takes the run from step 5 to step 6.


def _epoch_order(epoch: int) -> np.ndarray:
  return pipeline.epoch_order(helpers.fault_config().train.seed, epoch, NUM_TRAIN)


def _marked_example() -> int:
  """The example drawn in the 6th batch of epoch 0 (after the step-4 checkpoint)."""
  return int(_epoch_order(0)[BAD_STEP_IN_EPOCH_0 * BATCH])


def _steps_drawing(example: int) -> list:
  """0-based steps whose batch holds `example`, over the whole run."""
  steps = []
  for epoch in range(EPOCHS):
    position = int(np.flatnonzero(_epoch_order(epoch) == example)[0])
    steps.append(epoch * PER_EPOCH + position // BATCH)
  return steps


def _all_finite(tree) -> bool:
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def _run(workdir, marked=(), **overrides):
  return loop.train_and_evaluate(helpers.fault_config(**overrides), str(workdir),
                                 model=helpers.TinyNet(poison=True),
                                 dataset=helpers.fault_dataset(poison_index=list(marked)))


def test_nan_loss_stops_naming_the_step_and_keeps_only_finite_checkpoints(tmp_path):
  with pytest.raises(NonFiniteLossError) as info:
    _run(tmp_path, marked=[_marked_example()])
  message = str(info.value)
  assert f'training step {BAD_STEP_IN_EPOCH_0 + 1} ' in message, message
  assert os.path.join(str(tmp_path), 'checkpoints', '4') in message  # Where to resume.
  assert fh.committed_steps(tmp_path) == [4]  # Step 8's save never happened.
  state, _ = fh.read_checkpoint(tmp_path, 4, tmp_path / 'scratch')
  assert _all_finite(state)
  assert max(fh.metric_steps(tmp_path, strict=True)) < BAD_STEP_IN_EPOCH_0 + 1


@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
def test_update_that_overflows_is_caught_before_its_checkpoint(tmp_path):
  # The loss and gradients of step 1 are finite; the update (lr 1e39 > float32's max)
  # is not. With a checkpoint due after every step, that state must still not be saved.
  with pytest.raises(NonFiniteLossError, match=r'training step 1 '):
    _run(tmp_path, **{'optim.name': 'sgd', 'optim.learning_rate': 1e39,
                      'run.checkpoint_every_steps': 1, 'run.log_every_steps': 1,
                      'speed.steps_per_dispatch': 1})
  assert fh.committed_steps(tmp_path) == []


def test_skip_policy_drops_non_finite_updates_and_counts_them(tmp_path):
  marked = _marked_example()
  bad_steps = _steps_drawing(marked)
  assert len(set(bad_steps)) == EPOCHS
  result = _run(tmp_path, marked=[marked], **{'train.nan_policy': 'skip'})
  assert result['step'] == EPOCHS * PER_EPOCH and np.isfinite(result['train_loss'])
  records = fh.records(tmp_path)
  train = [r for r in records if 'train_loss' in r]
  # Each log line (every 2 steps) counts the skipped updates among its 2 steps.
  expected = {r['step']: sum(r['step'] - 2 <= s < r['step'] for s in bad_steps) for r in train}
  assert {r['step']: r['skipped_steps'] for r in train} == expected
  assert sum(expected.values()) == EPOCHS
  assert all(np.isfinite(r['train_loss']) for r in train)
  for step in fh.committed_steps(tmp_path):
    state, _ = fh.read_checkpoint(tmp_path, step, tmp_path / 'scratch')
    assert _all_finite(state)


def test_cli_huge_learning_rate_exits_2_naming_the_step(tmp_path):
  workdir = tmp_path / 'run'
  done = fh.run_train(workdir, '--config.optim.learning_rate=1e30',
                      '--config.run.checkpoint_every_steps=1')
  assert done.returncode == 2, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr
  match = re.search(r'error: NonFiniteLossError: .*training step (\d+) ', done.stderr)
  assert match, done.stderr[-3000:]
  bad = int(match.group(1))
  assert all(step < bad for step in fh.committed_steps(workdir))
  for step in fh.committed_steps(workdir):
    state, _ = fh.read_checkpoint(workdir, step, tmp_path)
    assert _all_finite(state)
