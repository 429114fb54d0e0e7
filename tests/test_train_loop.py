"""train_and_evaluate end to end on a tiny model: exact resume, chunks on the device equal to
steps one by one, augmentation that changes the run and repeats with its seed, faults."""
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

import helpers as fx
from resnet_jax.errors import ConfigError, NonFiniteLossError
from resnet_jax.train import checkpoint as checkpoint_lib, loop
from resnet_jax.train.metrics import read_jsonl
from resnet_jax.train.state import state_to_host

# Timing fields differ between runs by nature; everything else must match.
_TIMING = ('images_per_sec',)


def _run(workdir, model=None, dataset=None, **overrides):
  config = fx.tiny_config(**overrides)
  return loop.train_and_evaluate(config, str(workdir), model=model or fx.TinyNet(),
                                 dataset=dataset or fx.make_dataset())


def _final_params(workdir, keep=10):
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=keep)
  try:
    step = checkpointer.latest_step()
    state, meta = checkpointer.read(step)
  finally:
    checkpointer.close()
  return step, state


def _records(workdir):
  return [{k: v for k, v in r.items() if k not in _TIMING}
          for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'), strict=True)]


def _assert_trees_equal(a, b, exact=True):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    if exact:
      np.testing.assert_array_equal(x, y)
    else:
      np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)


@pytest.fixture(scope='module')
def unbroken(tmp_path_factory):
  """A complete 3-epoch run (24 steps), the reference for the resume tests."""
  workdir = tmp_path_factory.mktemp('unbroken')
  result = _run(workdir, **{'run.tensorboard': True})
  return workdir, result


@pytest.mark.slow  # A whole training run.
def test_run_writes_metrics_checkpoints_and_plot(unbroken):
  workdir, result = unbroken
  assert result['step'] == 24 and not result['preempted']
  assert 0.0 <= result['eval_accuracy'] <= 1.0
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'), strict=True)
  steps = [r['step'] for r in records]
  assert steps == sorted(set(steps))  # Each step once.
  train = [r for r in records if 'train_loss' in r]
  evals = [r for r in records if 'eval_accuracy' in r]
  assert [r['step'] for r in train] == [4, 8, 12, 16, 20, 24]
  assert [r['step'] for r in evals] == [8, 16, 24]  # Every epoch of 8 steps.
  assert all({'train_accuracy', 'learning_rate', 'images_per_sec'} <= set(r) for r in train)
  assert train[-1]['train_loss'] < train[0]['train_loss']
  assert os.path.getsize(os.path.join(workdir, 'training_curves.png')) > 1000
  events = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert any(name.startswith('events.out.tfevents') for name in events)
  assert json.load(open(os.path.join(workdir, 'config.json')))['train']['batch_size'] == 8
  step, _ = _final_params(workdir)
  assert step == 24


@pytest.mark.slow  # More whole training runs.
def test_resume_from_a_mid_run_checkpoint_ends_bitwise_equal(unbroken, tmp_path):
  reference, _ = unbroken
  workdir = tmp_path / 'resumed'
  shutil.copytree(reference, workdir)
  # Roll back to the step-8 checkpoint, as if killed just after it: later checkpoints gone,
  # metrics.jsonl still holding lines past it (and a torn line).
  for step in (16, 24):
    shutil.rmtree(workdir / 'checkpoints' / str(step))
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 25, "train_lo')
  result = _run(workdir)
  assert result['resumed_from'] == 8 and result['step'] == 24
  _assert_trees_equal(_final_params(workdir)[1], _final_params(reference)[1], exact=True)
  assert _records(workdir) == _records(reference)


@pytest.mark.slow  # A whole training run.
def test_rerunning_a_finished_run_ends_at_once(unbroken, tmp_path):
  reference, first = unbroken
  workdir = tmp_path / 'again'
  shutil.copytree(reference, workdir)
  result = _run(workdir)
  assert result['resumed_from'] == 24
  assert result['eval_accuracy'] == first['eval_accuracy']
  assert _records(workdir) == _records(reference)


@pytest.mark.slow  # More whole training runs.
def test_steps_one_by_one_give_the_run_of_chunks_on_the_device(unbroken, tmp_path):
  # The reference runs chunks of up to 3 steps as one train_chunk dispatch each; here every
  # step is a train_step dispatch of its own.
  reference, first = unbroken
  result = _run(tmp_path, **{'speed.loop_on_device': False})
  _assert_trees_equal(_final_params(tmp_path)[1], _final_params(reference)[1], exact=False)
  records, expected = _records(tmp_path), _records(reference)
  assert [r['step'] for r in records] == [r['step'] for r in expected]
  for a, b in zip(records, expected, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
  assert result['eval_accuracy'] == first['eval_accuracy']


_AUGMENTED = {'data.augment.crop_padding': 2, 'data.augment.flip': True}


@pytest.mark.slow  # More whole training runs.
def test_training_augments_and_the_same_seed_repeats_the_run_bitwise(unbroken, tmp_path):
  reference, _ = unbroken
  first, second = tmp_path / 'first', tmp_path / 'second'
  _run(first, **_AUGMENTED)
  _run(second, **_AUGMENTED)
  _assert_trees_equal(_final_params(first)[1], _final_params(second)[1], exact=True)
  assert _records(first) == _records(second)
  # The same run without the augmentation trains on other images: other weights, other loss.
  augmented, plain = _final_params(first)[1], _final_params(reference)[1]
  assert all(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(augmented['params']), jax.tree.leaves(plain['params']), strict=True))

  def losses(workdir):
    return [r['train_loss'] for r in _records(workdir) if 'train_loss' in r]

  assert len(losses(first)) == len(losses(reference)) == 6
  assert losses(first) != losses(reference)


@pytest.mark.slow  # More whole training runs.
def test_preemption_saves_returns_and_resumes_exactly(unbroken, tmp_path, monkeypatch):
  reference, _ = unbroken
  calls = {'n': 0}

  def stop_after_a_few(self):
    calls['n'] += 1
    return calls['n'] > 4  # Four chunks of 3, 1, 3, 1 steps (aligned to 3 and 4): step 8.

  monkeypatch.setattr(loop.StopRequest, 'requested', stop_after_a_few)
  result = _run(tmp_path, **{'run.checkpoint_every_steps': 100})
  assert result['preempted'] and result['step'] == 8
  assert result['checkpoint'].endswith(os.path.join('checkpoints', '8'))
  assert os.path.isdir(result['checkpoint'])
  monkeypatch.undo()
  result = _run(tmp_path, **{'run.checkpoint_every_steps': 100})
  assert result['resumed_from'] == 8 and not result['preempted']
  _assert_trees_equal(_final_params(tmp_path)[1], _final_params(reference)[1], exact=True)
  assert _records(tmp_path) == _records(reference)


@pytest.mark.slow  # More whole training runs.
def test_non_finite_loss_stops_naming_the_step_without_a_checkpoint(tmp_path):
  # Example 5 carries the NaN trigger; with the seed's order it appears in some step of
  # epoch 1; checkpoints are only due at step 8.
  dataset = fx.make_dataset(poison_index=5)
  with pytest.raises(NonFiniteLossError, match=r'training step (\d+)') as info:
    _run(tmp_path, model=fx.TinyNet(poison=True), dataset=dataset)
  bad_step = int(re.search(r'training step (\d+)', str(info.value)).group(1))
  assert 1 <= bad_step <= 8
  saved = os.listdir(tmp_path / 'checkpoints')
  assert all(int(s) < bad_step for s in saved if s.isdigit())


@pytest.mark.slow  # More whole training runs.
def test_skip_policy_counts_skipped_steps_and_finishes(tmp_path):
  dataset = fx.make_dataset(poison_index=5)
  result = _run(tmp_path, model=fx.TinyNet(poison=True), dataset=dataset,
                **{'train.nan_policy': 'skip'})
  records = read_jsonl(os.path.join(tmp_path, 'metrics.jsonl'), strict=True)
  skipped = sum(r.get('skipped_steps', 0) for r in records)
  assert skipped == 3  # Example 5 is in exactly one batch per epoch, 3 epochs.
  assert np.isfinite(result['train_loss'])
  _, state = _final_params(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))


def test_workdir_of_another_model_is_refused(unbroken, tmp_path):
  reference, _ = unbroken
  workdir = tmp_path / 'other'
  shutil.copytree(reference, workdir)
  with pytest.raises(ConfigError, match=r"num_classes: 3 there, 4 now"):
    _run(workdir, model=fx.TinyNet(num_classes=4), **{'model.num_classes': 4})


def test_batch_larger_than_the_dataset_names_the_field(tmp_path):
  with pytest.raises(ConfigError, match=r'config\.train\.batch_size=128'):
    _run(tmp_path, **{'train.batch_size': 128})


def test_unwritable_workdir_is_a_config_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(ConfigError, match='cannot be written'):
    _run(blocker / 'run')


def test_next_boundary_aligns_chunks_to_every_period():
  config = fx.tiny_config(**{'speed.steps_per_dispatch': 5, 'run.log_every_steps': 4,
                             'run.checkpoint_every_steps': 7})
  bounds, step = [], 0
  while step < 20:
    step = loop.next_boundary(step, config, steps_per_epoch=9, total=20)
    bounds.append(step)
  assert bounds == [4, 5, 7, 8, 9, 10, 12, 14, 15, 16, 18, 20]
  assert state_to_host is not None


@pytest.mark.slow  # More whole training runs.
def test_stop_request_is_honoured_between_steps_inside_a_chunk(tmp_path, monkeypatch):
  # Steps one by one, each a dispatch: a stop lands after the current step,
  # not at the end of a long chunk (here a whole 25-step epoch).
  calls = {'n': 0}

  def stop_at_the_sixth_question(self):
    calls['n'] += 1
    return calls['n'] >= 6

  monkeypatch.setattr(loop.StopRequest, 'requested_here', stop_at_the_sixth_question)
  result = _run(tmp_path, dataset=fx.make_dataset(num_train=200),
                **{'speed.loop_on_device': False, 'speed.steps_per_dispatch': 100,
                   'run.log_every_steps': 100, 'run.checkpoint_every_steps': 100})
  assert result['preempted'] and result['step'] == 5
  assert os.path.isdir(tmp_path / 'checkpoints' / '5')
