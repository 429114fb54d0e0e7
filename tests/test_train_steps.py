"""train_step / eval_step under pmap, optimizers, schedules and the weight-decay mask."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import helpers as fx
from resnet_jax.data import pipeline
from resnet_jax.errors import ConfigError
from resnet_jax.train import devices as devices_lib, optim, run_shape, steps
from resnet_jax.train.state import create_train_state

DEVICES = jax.local_devices()[:1]


def _setup(config=None, model=None, settings=None):
  config = config or fx.tiny_config()
  model = model or fx.TinyNet()
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  state = create_train_state(model, tx, (8, 8, 3), seed=0)
  state = devices_lib.replicate_on_devices(jax.tree.map(np.asarray, state), DEVICES)
  settings = settings or steps.StepSettings(num_classes=3)
  return model, tx, state, settings


def _host_batch(split, n=16, poison=False):
  batch = {'image': split.images[:n][None], 'label': split.labels[:n][None]}
  if poison:
    batch['image'] = batch['image'].copy()
    batch['image'][0, 0, 0, 0, 0] = 255
  return batch


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_loss_falls_over_a_few_steps():
  model, tx, state, settings = _setup()
  step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx, settings=settings),
                  axis_name='batch', donate_argnums=(0,), devices=DEVICES)
  batch = _host_batch(fx.make_split(32, 0), 32)
  losses = []
  for _ in range(25):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss'][0]))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step[0]) == 25


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_eval_step_counts_every_example_once():
  """21 examples in batches of 8: the last batch is padded with 3 copies of example 0, which
  the model gets right (top-1 and top-5), so that a sum that forgets the mask is caught."""
  model = fx.TinyNet(num_classes=12)  # 10 classes or more: top-5 is summed too.
  settings = steps.StepSettings(num_classes=12)
  state = create_train_state(model, optax.sgd(0.1), (8, 8, 3), seed=0)
  # The data's labels are 0-2: the others' logits pushed down, so that some are right.
  head = dict(state.params['head'], bias=jnp.where(jnp.arange(12) < 3, 0.0, -10.0))
  state = jax.tree.map(np.asarray, state.replace(params=dict(state.params, head=head)))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  state = devices_lib.replicate_on_devices(state, DEVICES)
  split = fx.make_split(21, 1)
  logits = np.asarray(model.apply(variables, split.images / 255.0, train=False))
  right = np.flatnonzero(logits.argmax(-1) == split.labels)
  assert 0 < len(right) < 21, len(right)
  order = np.concatenate([right[:1], np.delete(np.arange(21), right[0])])
  split, logits = type(split)(split.images[order], split.labels[order]), logits[order]
  evaluate = jax.pmap(functools.partial(steps.eval_step, model=model, settings=settings),
                      axis_name='batch', devices=DEVICES)
  layout = run_shape.batch_layout(8, DEVICES, 'run.eval_batch_size')
  totals = dict.fromkeys(steps.eval_sum_names(12), 0.0)
  batches = pipeline.iterate(pipeline.eval_dataset(split, layout, pipeline.Recipe(8)), 1)
  for batch in devices_lib.prefetch_to_devices(batches, DEVICES):
    out = evaluate(state, batch)
    assert out.keys() == totals.keys()
    totals = {k: totals[k] + float(out[k][0]) for k in totals}
  # Reference: every example once, no padding, in one call.
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, split.labels)
  top5 = (np.argsort(-logits, axis=-1)[:, :5] == split.labels[:, None]).any(-1)
  assert totals['count'] == 21
  np.testing.assert_allclose(totals['loss_sum'], float(losses.sum()), rtol=1e-5)
  assert totals['correct_sum'] == float((logits.argmax(-1) == split.labels).sum())
  assert totals['top5_correct_sum'] == float(top5.sum())


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_skip_policy_leaves_the_state_unchanged_on_a_non_finite_step():
  model, tx, state, settings = _setup(
      model=fx.TinyNet(poison=True), settings=steps.StepSettings(num_classes=3,
                                                                   nan_policy='skip'))
  step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx, settings=settings),
                  axis_name='batch', devices=DEVICES)
  before = jax.tree.map(np.asarray, state)
  state, metrics = step(state, _host_batch(fx.make_split(16, 0), poison=True))
  assert float(metrics['finite'][0]) == 0.0
  assert int(state.step[0]) == 1  # The step still advances (the data position is the step).
  for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  state, metrics = step(state, _host_batch(fx.make_split(16, 0)))
  assert float(metrics['finite'][0]) == 1.0
  assert not np.array_equal(jax.tree.leaves(before.params)[0], jax.tree.leaves(state.params)[0])


def test_label_smoothing_changes_the_loss_as_defined():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  plain = steps.cross_entropy(logits, jnp.array([0]), 3)
  smooth = steps.cross_entropy(logits, jnp.array([0]), 3, label_smoothing=0.3)
  log_p = jax.nn.log_softmax(logits)[0]
  target = np.array([0.8, 0.1, 0.1])  # (1 - 0.3) one-hot + 0.3 / 3.
  np.testing.assert_allclose(smooth[0], -(target * log_p).sum(), rtol=1e-6)
  np.testing.assert_allclose(plain[0], -log_p[0], rtol=1e-6)


def test_bfloat16_logits_give_a_float32_loss():
  loss = steps.cross_entropy(jnp.ones((2, 3), jnp.bfloat16), jnp.array([0, 1]), 3)
  assert loss.dtype == jnp.float32


def test_weight_decay_mask_selects_only_kernels():
  params = {'conv': {'kernel': 1.0, 'bias': 1.0}, 'bn': {'scale': 1.0, 'bias': 1.0},
            'head': {'kernel': 1.0, 'bias': 1.0}}
  mask = optim.kernel_mask(params)
  assert mask == {'conv': {'kernel': True, 'bias': False}, 'bn': {'scale': False, 'bias': False},
                  'head': {'kernel': True, 'bias': False}}


def _zero_grad_update(config, params):
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


@pytest.mark.parametrize('optimizer', ['sgd', 'adam'])
def test_weight_decay_touches_kernels_only(optimizer):
  params = {'conv': {'kernel': jnp.full((2,), 2.0), 'bias': jnp.full((2,), 2.0)},
            'bn': {'scale': jnp.full((2,), 2.0)}}
  config = fx.tiny_config(**{'optim.name': optimizer, 'optim.weight_decay': 0.1,
                             'optim.learning_rate': 0.5, 'optim.momentum': 0.0})
  updates = _zero_grad_update(config, params)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 0.1 * 2.0, rtol=1e-6)
  np.testing.assert_array_equal(updates['conv']['bias'], 0.0)
  np.testing.assert_array_equal(updates['bn']['scale'], 0.0)


def test_adam_uses_keras_defaults():
  config = fx.tiny_config(**{'optim.name': 'adam', 'optim.learning_rate': 1e-3})
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  params = {'w': jnp.array([1.0, -2.0])}
  grads = {'w': jnp.array([1e-6, 0.5])}
  updates, _ = tx.update(grads, tx.init(params), params)
  # First Adam step: m_hat = g, v_hat = g^2, update = -lr * g / (|g| + eps), eps = 1e-7.
  expected = -1e-3 * grads['w'] / (jnp.abs(grads['w']) + 1e-7)
  np.testing.assert_allclose(updates['w'], expected, rtol=1e-5)


def test_sgd_nesterov_momentum_matches_the_formula():
  config = fx.tiny_config(**{'optim.name': 'sgd', 'optim.learning_rate': 0.1, 'optim.momentum': 0.9,
                             'optim.nesterov': True})
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  params = {'w': jnp.array([1.0])}
  opt_state = tx.init(params)
  g = {'w': jnp.array([1.0])}
  u1, opt_state = tx.update(g, opt_state, params)
  u2, _ = tx.update(g, opt_state, params)
  # Nesterov: v1 = g, step = g + 0.9 v1 = 1.9 g; v2 = 0.9 v1 + g = 1.9, step = g + 0.9 * 1.9.
  np.testing.assert_allclose(u1['w'], -0.1 * 1.9, rtol=1e-6)
  np.testing.assert_allclose(u2['w'], -0.1 * (1 + 0.9 * 1.9), rtol=1e-6)


def test_gradient_clipping_bounds_the_update():
  config = fx.tiny_config(**{'optim.name': 'sgd', 'optim.learning_rate': 1.0, 'optim.momentum': 0.0,
                             'optim.grad_clip_norm': 1.0})
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  params = {'w': jnp.zeros(2)}
  updates, _ = tx.update({'w': jnp.array([30.0, 40.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.6, -0.8], rtol=1e-6)


def test_piecewise_schedule_divides_by_ten_at_the_boundaries():
  config = fx.tiny_config(**{'optim.schedule': 'piecewise', 'optim.learning_rate': 0.1,
                             'optim.lr_boundaries': (5, 8)})
  _, schedule = fx.create_optimizer(config, steps_per_epoch=10)
  values = [float(schedule(s)) for s in (0, 4, 5, 7, 8, 20)]
  np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_warmup_cosine_rises_then_decays_to_zero():
  config = fx.tiny_config(**{'optim.schedule': 'warmup_cosine', 'optim.learning_rate': 0.4,
                             'optim.warmup_epochs': 1.0, 'train.num_epochs': 3})
  _, schedule = fx.create_optimizer(config, steps_per_epoch=10)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.2, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(20)), 0.2, rtol=1e-5)  # Cosine midpoint.
  assert float(schedule(30)) == pytest.approx(0.0, abs=1e-7)


def test_constant_schedule_with_warmup():
  config = fx.tiny_config(**{'optim.schedule': 'constant', 'optim.learning_rate': 0.2,
                             'optim.warmup_epochs': 0.5})
  _, schedule = fx.create_optimizer(config, steps_per_epoch=10)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 1, 5, 50)],
                             [0.0, 0.04, 0.2, 0.2], rtol=1e-6)


@pytest.mark.parametrize('field,value', [('name', 'rmsprop'), ('schedule', 'cyclic')])
def test_unknown_optimizer_or_schedule_names_the_field(field, value):
  config = fx.tiny_config()
  config.optim[field] = value
  with pytest.raises(ConfigError, match=rf'config\.optim\.{field}={value!r}'):
    fx.create_optimizer(config, steps_per_epoch=10)


def test_negative_learning_rate_names_the_field():
  config = fx.tiny_config(**{'optim.learning_rate': -0.1})
  with pytest.raises(ConfigError, match=r'config\.optim\.learning_rate=-0\.1'):
    fx.create_optimizer(config, steps_per_epoch=10)


def test_frozen_backbone_updates_only_the_head():
  config = fx.tiny_config(**{'finetune.freeze_backbone': True, 'finetune.init_from': 'x',
                             'optim.name': 'sgd', 'optim.momentum': 0.0})
  params = {'conv': {'kernel': jnp.ones(2)}, 'head': {'kernel': jnp.ones(2), 'bias': jnp.ones(1)}}
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates['conv']['kernel'], 0.0)
  np.testing.assert_allclose(updates['head']['kernel'], -0.01)
  assert isinstance(config, ml_collections.ConfigDict)
