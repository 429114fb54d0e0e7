"""Checkpoints: exact round trip, last-K-plus-best retention, damaged ones skipped, wrong model."""
import functools
import logging
import os

import jax
import numpy as np
import pytest

import helpers as fx
from resnet_jax.errors import CheckpointError
from resnet_jax.train import checkpoint as checkpoint_lib
from resnet_jax.train.state import create_train_state, state_from_host, state_to_host


@functools.lru_cache(maxsize=None)
def _host_state(seed=0, num_classes=fx.NUM_CLASSES):
  """A TrainState of numpy arrays (built once per module: compiling init is the slow part)."""
  config = fx.tiny_config(**{'optim.name': 'adam'})
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  state = create_train_state(fx.TinyNet(num_classes=num_classes), tx, (8, 8, 3), seed=seed)
  # Make every array distinctive (a fresh Adam state is all zeros).
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda x: np.asarray(x) + rng.integers(1, 9, np.shape(x)).astype(x.dtype),
                       state)
  return state


def _save_steps(checkpointer, steps, accuracies=None):
  host = state_to_host(_host_state())
  for step in steps:
    accuracy = None if accuracies is None else accuracies.get(step)
    checkpointer.save(step, host, {'note': step}, eval_accuracy=accuracy)
  checkpointer.wait()
  return host


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_round_trip_is_exact(tmp_path):
  state = _host_state()
  host = state_to_host(state)
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(7, host, {'pending_train': {'loss_sum': 1.5}})
  checkpointer.wait()
  step, restored, meta = checkpointer.restore_latest(host)
  checkpointer.close()
  assert step == 7 and meta['pending_train'] == {'loss_sum': 1.5}
  back = state_from_host(state, restored)
  assert jax.tree.structure(back) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_keeps_the_last_k_and_the_best(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
  accuracies = {1: 0.5, 2: 0.9, 3: 0.4, 4: None, 5: 0.3, 6: 0.2}
  _save_steps(checkpointer, range(1, 7), accuracies)
  assert checkpointer.all_steps() == [2, 5, 6]
  assert checkpointer.best_step() == 2
  assert checkpointer.latest_step() == 6
  checkpointer.close()


def test_the_best_is_the_latest_when_it_is_best(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
  _save_steps(checkpointer, range(1, 6), {s: s / 10 for s in range(1, 6)})
  assert checkpointer.all_steps() == [4, 5]
  assert checkpointer.best_step() == 5
  checkpointer.close()


def _damage(path, how):
  files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
  data_files = [f for f in files if os.sep + 'd' + os.sep in f] or files
  target = max(data_files, key=os.path.getsize)
  if how == 'truncate':
    with open(target, 'r+b') as f:
      f.truncate(os.path.getsize(target) // 2)
  else:
    with open(target, 'r+b') as f:
      data = bytearray(f.read())
      for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
      f.seek(0)
      f.write(data)
  return target


@pytest.mark.parametrize('how', ['truncate', 'garble'])
def test_damaged_latest_is_set_aside_and_the_next_older_restored(tmp_path, caplog, how):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  host = _save_steps(checkpointer, [1, 2, 3])
  checkpointer.close()
  _damage(os.path.join(tmp_path, 'checkpoints', '3'), how)
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  with caplog.at_level(logging.WARNING):
    step, restored, _ = checkpointer.restore_latest(host)
  assert step == 2
  assert any('checkpoints/3' in r.getMessage() and 'damaged' in r.getMessage()
             for r in caplog.records)
  for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  # The damaged one is kept for inspection, the good ones untouched.
  assert len(os.listdir(tmp_path / 'checkpoints_broken')) == 1
  assert checkpointer.all_steps() == [1, 2]
  # A new save at the damaged step's number now works, and keeps both good ones.
  checkpointer.save(3, host, {})
  checkpointer.wait()
  assert checkpointer.all_steps() == [1, 2, 3]
  checkpointer.close()


def test_damaged_metadata_is_detected(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  host = _save_steps(checkpointer, [1, 2])
  checkpointer.close()
  meta = tmp_path / 'checkpoints' / '2' / 'meta' / 'metadata'
  meta.write_text('{"step": 2, "checks')
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  step, _, _ = checkpointer.restore_latest(host)
  checkpointer.close()
  assert step == 1


def test_no_intact_checkpoint_gives_none(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  host = _save_steps(checkpointer, [1])
  checkpointer.close()
  _damage(os.path.join(tmp_path, 'checkpoints', '1'), 'truncate')
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  assert checkpointer.restore_latest(host) is None
  checkpointer.close()


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_checkpoint_of_another_model_names_the_parameter_and_both_shapes(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  _save_steps(checkpointer, [1])
  other = state_to_host(_host_state(num_classes=5))
  with pytest.raises(CheckpointError, match=r'params/head/bias has shape \(3,\) in the checkpoint '
                                            r'but \(5,\) in the model'):
    checkpointer.restore_latest(other)
  # A wrong model is not damage: the checkpoint stays where it is.
  assert checkpointer.all_steps() == [1]
  checkpointer.close()
