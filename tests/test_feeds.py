"""The feeds: the in-flight bound, stop requests between steps, and that every feed gives
the same steps and evaluation (the whole-run equivalence is in test_train_loop.py)."""
import jax
import numpy as np
import pytest

import helpers as fx
from resnet_jax.data import pipeline
from resnet_jax.train import feeds, steps
from resnet_jax.train.run_shape import RunShape
from resnet_jax.train.state import create_train_state, seed_keys, unreplicate


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

  state, sums, done = feeds.dispatch_steps(run_step, 0, 5)
  assert (state, done, [s.index for s in sums]) == (5, 5, [0, 1, 2, 3, 4])
  # Step k is dispatched only after step k - 2 is done.
  assert events == [('dispatch', 0), ('dispatch', 1), ('wait', 0), ('dispatch', 2),
                    ('wait', 1), ('dispatch', 3), ('wait', 2), ('dispatch', 4)]


def test_dispatch_steps_asks_before_every_step_and_stops_when_told():
  questions = []

  def should_stop():
    questions.append(len(questions))
    return len(questions) > 3

  state, sums, done = feeds.dispatch_steps(lambda s: (s + 1, None), 0, 10, should_stop)
  assert (state, done, len(sums), len(questions)) == (3, 3, 3, 4)


@pytest.fixture(scope='module')
def run_parts():
  config = fx.tiny_config()
  dataset = fx.make_dataset()
  shape = RunShape.from_config(config, len(dataset.train), len(dataset.test))
  tx, _ = fx.create_optimizer(config, shape.steps_per_epoch)
  model = fx.TinyNet()
  _, _, data_key = seed_keys(config.train.seed)
  fns = steps.make_step_functions(model, tx, steps.StepSettings(num_classes=fx.NUM_CLASSES),
                                  shape, data_key)
  host_state = jax.tree.map(np.asarray, create_train_state(model, tx, dataset.image_shape,
                                                           config.train.seed))
  return dataset, shape, fns, data_key, host_state


def _feeds(run_parts):
  dataset, shape, fns, data_key, _ = run_parts
  return {'loop': feeds.ResidentFeed(fns, dataset, shape, loop_on_device=True),
          'step': feeds.ResidentFeed(fns, dataset, shape, loop_on_device=False),
          'host': feeds.HostFeed(fns, dataset, shape, data_key)}


def test_run_shape_describes_the_batches_and_steps(run_parts):
  _, shape, _, _, _ = run_parts
  # tiny_config: batch 8 on 64 examples, 3 epochs; evaluation batch 8 over 21 examples.
  assert (shape.train.global_batch, shape.steps_per_epoch, shape.total_steps) == (8, 8, 24)
  assert (shape.eval.global_batch, shape.num_eval_batches) == (8, 3)
  assert shape.local_devices == tuple(jax.local_devices())


def test_every_feed_runs_the_same_steps_and_evaluates_alike(run_parts):
  *_, host_state = run_parts
  results = {}
  for name, feed in _feeds(run_parts).items():
    state = pipeline.replicate_on_devices(host_state, jax.local_devices())
    # Chunks as the loop hands them out: 3 steps, then 5 (to the epoch's end), then 2.
    done_total = 0
    for step, count in ((0, 3), (3, 5), (8, 2)):
      state, sums, done = feed.train(state, step, count)
      assert done == count and sum(int(unreplicate(s)['steps']) for s in sums) == count
      done_total += done
    assert int(unreplicate(state.step)) == done_total == 10
    results[name] = (unreplicate(state.params), feed.evaluate(state))
  reference_params, reference_eval = results['loop']
  for name in ('step', 'host'):
    params, metrics = results[name]
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params)):
      np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6, err_msg=name)
    assert metrics == pytest.approx(reference_eval, rel=1e-5), name
  assert 0.0 <= reference_eval['eval_accuracy'] <= 1.0 and reference_eval['eval_loss'] > 0


def test_host_feed_restarts_its_iterator_where_it_is_asked(run_parts):
  # A resumed run asks from its checkpoint's step: the host feed must start there, not at 0.
  *_, host_state = run_parts
  feed = _feeds(run_parts)['host']
  state = pipeline.replicate_on_devices(host_state, jax.local_devices())
  state, _, _ = feed.train(state, 0, 4)
  resumed = feeds.HostFeed(feed.fns, feed.dataset, feed.shape, feed.data_key)
  state_b = pipeline.replicate_on_devices(
      jax.tree.map(np.asarray, unreplicate(state)), jax.local_devices())
  state, _, _ = feed.train(state, 4, 3)
  state_b, _, _ = resumed.train(state_b, 4, 3)
  for x, y in zip(jax.tree.leaves(unreplicate(state.params)),
                  jax.tree.leaves(unreplicate(state_b.params))):
    np.testing.assert_array_equal(x, y)
