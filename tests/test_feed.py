"""The feed: the in-flight bound, stop requests between steps, chunks of steps in one
dispatch equal to one step per dispatch, a restart where it is asked, and evaluation that
counts each example once (the whole-run equivalences are in test_train_loop.py)."""
import jax
import ml_collections
import numpy as np
import optax
import pytest

import helpers as fx
from resnet_jax.data import pipeline
from resnet_jax.data.augment import Augmentation
from resnet_jax.train import devices as devices_lib, feed as feed_lib, steps
from resnet_jax.train.run_shape import RunShape
from resnet_jax.train.state import create_train_state, unreplicate


class _Sums:
  """Stands for a dispatch's device-side sums; records when the host waited for it."""

  def __init__(self, index, events):
    self.index, self.events = index, events

  def block_until_ready(self):
    self.events.append(('wait', self.index))
    return self


def test_dispatch_steps_keeps_at_most_two_steps_in_flight():
  events = []

  def run_step(state):
    events.append(('dispatch', state))
    return state + 1, _Sums(state, events)

  state, sums, done = feed_lib.dispatch_steps(run_step, 0, 5)
  assert (state, done, [s.index for s in sums]) == (5, 5, [0, 1, 2, 3, 4])
  # Step k is dispatched only after step k - 2 is done.
  assert events == [('dispatch', 0), ('dispatch', 1), ('wait', 0), ('dispatch', 2),
                    ('wait', 1), ('dispatch', 3), ('wait', 2), ('dispatch', 4)]


def test_dispatch_steps_asks_before_every_step_and_stops_when_told():
  questions = []

  def should_stop():
    questions.append(len(questions))
    return len(questions) > 3

  state, sums, done = feed_lib.dispatch_steps(lambda s: (s + 1, None), 0, 10, should_stop)
  assert (state, done, len(sums), len(questions)) == (3, 3, 3, 4)


@pytest.fixture(scope='module')
def run_parts():
  dataset = fx.make_dataset()
  train = ml_collections.ConfigDict({'batch_size': 8, 'num_epochs': 3, 'num_steps': None})
  shape = RunShape.from_config(train, None, len(dataset.train), len(dataset.test))
  tx = optax.adam(1e-2)
  model = fx.TinyNet()
  fns = steps.make_step_functions(model, tx, steps.StepSettings(num_classes=fx.NUM_CLASSES))
  host_state = jax.tree.map(np.asarray, create_train_state(model, tx, (8, 8, 3), 0))
  recipe = pipeline.Recipe(8, Augmentation(crop_padding=2, flip=True), seed=0)
  return dataset, shape, fns, recipe, host_state


def _feed(run_parts, chunk_on_device):
  dataset, shape, fns, recipe, _ = run_parts
  return feed_lib.Feed(fns, dataset, shape, recipe, chunk_on_device=chunk_on_device)


def _state(run_parts):
  return devices_lib.replicate_on_devices(run_parts[-1], jax.local_devices())


def test_run_shape_describes_the_batches_and_steps(run_parts):
  _, shape, *_ = run_parts
  # Batch 8 on 64 examples, 3 epochs; evaluation batch 8 over 21 examples.
  assert (shape.train.global_batch, shape.steps_per_epoch, shape.total_steps) == (8, 8, 24)
  assert (shape.eval.global_batch, shape.num_eval_batches) == (8, 3)
  assert shape.local_devices == tuple(jax.local_devices())


def test_chunks_on_the_device_run_the_steps_one_dispatch_each_runs(run_parts):
  results = {}
  for chunked in (True, False):
    feed = _feed(run_parts, chunked)
    state = _state(run_parts)
    # Chunks as the loop hands them out: 3 steps, then 5 (to the epoch's end), then 2.
    losses = []
    for step, count in ((0, 3), (3, 5), (8, 2)):
      state, sums, done = feed.train(state, step, count)
      assert done == count and len(sums) == (1 if chunked else count)
      assert sum(int(unreplicate(s)['steps']) for s in sums) == count
      losses.append(sum(float(unreplicate(s)['loss_sum']) for s in sums))
    assert int(unreplicate(state.step)) == 10
    results[chunked] = (unreplicate(state.params), losses, feed.evaluate(state))
    feed.close()
  (params_a, losses_a, eval_a), (params_b, losses_b, eval_b) = results[True], results[False]
  for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)
  assert losses_a == pytest.approx(losses_b, rel=1e-5)
  assert eval_a == pytest.approx(eval_b, rel=1e-5)
  assert 0.0 <= eval_a['eval_accuracy'] <= 1.0 and eval_a['eval_loss'] > 0


def test_the_feed_restarts_its_pipeline_where_it_is_asked(run_parts):
  # A resumed run asks from its checkpoint's step: the feed must start there, not at 0.
  feed = _feed(run_parts, False)
  state, _, _ = feed.train(_state(run_parts), 0, 4)
  resumed = _feed(run_parts, False)
  state_b = devices_lib.replicate_on_devices(jax.tree.map(np.asarray, unreplicate(state)),
                                             jax.local_devices())
  state, _, _ = feed.train(state, 4, 3)
  state_b, _, _ = resumed.train(state_b, 4, 3)
  for x, y in zip(jax.tree.leaves(unreplicate(state.params)),
                  jax.tree.leaves(unreplicate(state_b.params)), strict=True):
    np.testing.assert_array_equal(x, y)
  feed.close()
  resumed.close()


def test_evaluation_counts_every_example_once_and_padding_nothing(run_parts):
  """21 examples in batches of 8: the last batch holds 3 copies of example 0, which the
  model gets right (top-1 and top-5), so that a sum that forgets the mask is caught."""
  dataset, shape, _, recipe, _ = run_parts
  model = fx.TinyNet(num_classes=12)  # 10 classes or more: top-5 is reported too.
  tx = optax.adam(1e-2)
  state = devices_lib.replicate_on_devices(
      jax.tree.map(np.asarray, create_train_state(model, tx, (8, 8, 3), 0)), jax.local_devices())
  fns = steps.make_step_functions(model, tx, steps.StepSettings(num_classes=12))
  trainer = feed_lib.Feed(fns, dataset, shape, recipe)
  state, _, _ = trainer.train(state, 0, 16)  # Enough to get some examples right, not all.
  trainer.close()
  variables = {'params': unreplicate(state.params), 'batch_stats': unreplicate(state.batch_stats)}
  test = dataset.test
  logits = np.asarray(model.apply(variables, test.images / 255.0, train=False))
  right = np.flatnonzero(logits.argmax(-1) == test.labels)
  wrong = np.flatnonzero(logits.argmax(-1) != test.labels)
  assert len(right) and len(wrong), (len(right), len(wrong))
  order = np.concatenate([right[:1], np.delete(np.arange(len(test)), right[0])])
  test = type(test)(test.images[order], test.labels[order])
  logits = logits[order]
  metrics = feed_lib.Feed(fns, type(dataset)(dataset.train, test, dataset.class_names, 'test'),
                          shape, recipe).evaluate(state)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, test.labels)
  top5 = (np.argsort(-logits, axis=-1)[:, :5] == test.labels[:, None]).any(-1)
  assert metrics['eval_loss'] == pytest.approx(float(losses.mean()), rel=1e-5)
  assert metrics['eval_accuracy'] == pytest.approx(float((logits.argmax(-1) == test.labels).mean()))
  assert metrics['eval_top5_accuracy'] == pytest.approx(float(top5.mean()))
  assert 0 < metrics['eval_accuracy'] < 1
