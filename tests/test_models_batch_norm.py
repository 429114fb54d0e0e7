"""Batch norm with the closed-form training gradient (models/batch_norm.py) against
nn.BatchNorm: same variables, bitwise the same forward pass and running statistics, the
same gradients up to float rounding; everything else falls back to nn.BatchNorm."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.models import batch_norm, layouts
from resnet_jax.models.blocks import ConvolutionalBlock

SETTINGS = dict(momentum=0.99, epsilon=1e-3, use_fast_variance=False,
                param_dtype=jnp.float32)


def _values_and_grads(module, x, params, batch_stats, **call):
  def loss(params, x):
    y, updated = module.apply({'params': params, 'batch_stats': batch_stats}, x,
                              mutable=['batch_stats'], **call)
    # A loss whose gradient differs per element, so every term of dx matters.
    return jnp.sum(y * jnp.cos(3.0 * x)), (y, updated['batch_stats'])
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)


def _inputs(shape, seed=0):
  rng = np.random.RandomState(seed)
  channels = shape[-1]
  x = jnp.asarray(rng.randn(*shape).astype(np.float32) * 2.0 + 0.7)
  params = {'scale': jnp.asarray(rng.rand(channels).astype(np.float32) + 0.5),
            'bias': jnp.asarray(rng.randn(channels).astype(np.float32))}
  batch_stats = {'mean': jnp.asarray(rng.randn(channels).astype(np.float32)),
                 'var': jnp.asarray(rng.rand(channels).astype(np.float32) + 0.1)}
  return x, params, batch_stats


@pytest.mark.parametrize('shape', [(8, 6, 6, 16), (4, 2, 2, 32), (5, 9)])
def test_training_step_matches_flax_batch_norm(shape):
  x, params, batch_stats = _inputs(shape)
  (_, (y_ref, stats_ref)), grads_ref = _values_and_grads(
      nn.BatchNorm(**SETTINGS), x, params, batch_stats, use_running_average=False)
  (_, (y, stats)), grads = _values_and_grads(
      batch_norm.BatchNorm(**SETTINGS), x, params, batch_stats, use_running_average=False)
  np.testing.assert_array_equal(y, y_ref)
  jax.tree.map(np.testing.assert_array_equal, stats, stats_ref)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)


def test_variables_are_flax_batch_norms():
  x = jnp.ones((2, 3, 3, 4))
  ours = batch_norm.BatchNorm(**SETTINGS).init(jax.random.key(0), x, use_running_average=False)
  flax_ = nn.BatchNorm(**SETTINGS).init(jax.random.key(0), x, use_running_average=False)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), ours) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), flax_)
  jax.tree.map(np.testing.assert_array_equal, ours, flax_)


@pytest.mark.parametrize('case', ['running_average', 'bfloat16', 'one_pass_variance'])
def test_what_the_closed_form_does_not_cover_is_flax_batch_norm(case):
  x, params, batch_stats = _inputs((4, 3, 3, 8), seed=1)
  settings, call = dict(SETTINGS), {'use_running_average': case == 'running_average'}
  if case == 'bfloat16':
    settings['dtype'] = jnp.bfloat16
  if case == 'one_pass_variance':
    settings['use_fast_variance'] = True
  ours = _values_and_grads(batch_norm.BatchNorm(**settings), x, params, batch_stats, **call)
  want = _values_and_grads(nn.BatchNorm(**settings), x, params, batch_stats, **call)
  jax.tree.map(np.testing.assert_array_equal, ours, want)


def test_conv_impl_picks_the_norm():
  layout = layouts.get_layout('coursera')
  on_cpu = jax.default_backend() == 'cpu'
  expected = {'xla': nn.BatchNorm, 'matmul': batch_norm.BatchNorm,
              'auto': batch_norm.BatchNorm if on_cpu else nn.BatchNorm}
  for conv_impl, cls in expected.items():
    _, norm = layouts.conv_and_norm(layout, conv_impl=conv_impl)
    assert norm.func is cls, conv_impl


def test_a_block_has_the_same_gradients_with_either_norm():
  x, _, _ = _inputs((4, 6, 6, 3), seed=2)
  results = []
  for conv_impl in ('xla', 'matmul'):
    block = ConvolutionalBlock((4, 4, 8), 3, strides=2, conv_impl=conv_impl)
    variables = block.init(jax.random.key(0), x, train=False)

    def loss(params, block=block, variables=variables):
      y, updated = block.apply({'params': params, 'batch_stats': variables['batch_stats']},
                               x, True, mutable=['batch_stats'])
      return jnp.sum(y * jnp.cos(y)), updated
    results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params']))
  (loss_xla, stats_xla), grads_xla = results[0]
  (loss_mm, stats_mm), grads_mm = results[1]
  np.testing.assert_allclose(loss_mm, loss_xla, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               stats_mm, stats_xla)
  # Conv biases before a batch norm have a zero gradient up to rounding: compare every
  # leaf on the scale of the largest gradient.
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_xla))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale),
               grads_mm, grads_xla)
