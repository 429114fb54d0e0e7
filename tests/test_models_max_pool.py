"""resnet_jax.models.max_pool: the sliced max pool equals nn.max_pool, values and gradients,
ties included (ReLU's zeros make many), and the models take it exactly where conv_impl says."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from resnet_jax.models import conv as conv_lib, create_model
from resnet_jax.models.max_pool import sliced_max_pool

POOLS = [  # (input shape, window, strides, padding)
    ((3, 32, 32, 8), (3, 3), (2, 2), 'VALID'),  # The course's and Keras's stem pool.
    ((2, 15, 17, 5), (3, 3), (2, 2), ((1, 1), (1, 1))),  # torchvision's.
    ((2, 9, 9, 3), (2, 2), (2, 2), 'SAME'),
    ((2, 10, 10, 3), (3, 3), (1, 1), 'SAME'),
]
INPUTS = {
    'normal': lambda rng, shape: rng.standard_normal(shape),
    'after ReLU': lambda rng, shape: np.maximum(rng.standard_normal(shape), 0),
    'all zeros': lambda rng, shape: np.zeros(shape),
    'few values': lambda rng, shape: rng.integers(0, 3, shape),
}


@pytest.mark.parametrize('shape, window, strides, padding', POOLS)
@pytest.mark.parametrize('kind', INPUTS)
def test_values_and_gradients_are_max_pools(shape, window, strides, padding, kind):
  rng = np.random.default_rng(0)
  x = jnp.asarray(INPUTS[kind](rng, shape), jnp.float32)
  expected, expected_vjp = jax.vjp(lambda v: nn.max_pool(v, window, strides, padding), x)
  got, got_vjp = jax.vjp(lambda v: sliced_max_pool(v, window, strides, padding), x)
  np.testing.assert_array_equal(got, expected)
  cotangent = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
  (want,), (have,) = expected_vjp(cotangent), got_vjp(cotangent)
  # Each window's gradient reaches the same position (the first maximum, row-major)...
  np.testing.assert_array_equal(have != 0, want != 0)
  # ...and overlapping windows add up to the same, up to the order of the additions.
  np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)


def test_under_jit_and_in_bfloat16():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 11, 11, 4)), jnp.bfloat16)
  pool = jax.jit(lambda v: sliced_max_pool(v, (3, 3), (2, 2), ((1, 1), (1, 1))))
  np.testing.assert_array_equal(pool(x), nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))))
  assert pool(x).dtype == jnp.bfloat16


def _pool_primitives(conv_impl: str) -> str:
  model = create_model('resnet50', layout='coursera', num_classes=6, conv_impl=conv_impl)
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  loss = lambda v: model.apply(v, x, train=True, mutable=['batch_stats'])[0].sum()
  return str(jax.make_jaxpr(jax.grad(loss))(variables))


def test_models_pool_by_conv_impl():
  assert 'reduce_window_max' in _pool_primitives('xla')
  assert 'reduce_window_max' not in _pool_primitives('matmul')
  auto = _pool_primitives('auto')
  assert ('reduce_window_max' in auto) == (not conv_lib.cpu_formulations('auto'))
