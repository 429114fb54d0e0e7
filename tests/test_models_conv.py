"""The convolution implementations compute lax's convolution, with nn.Conv's parameters."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from resnet_jax.errors import ConfigError
from resnet_jax.models import conv as conv_lib, create_model
from resnet_jax.train import config as config_lib

# Exact float32 products on both sides, so that only the summation order differs.
HIGHEST = lax.Precision.HIGHEST
TOL = dict(rtol=1e-5, atol=1e-5)

CASES = [  # input [N, H, W, C], kernel size, stride, padding
    ((2, 5, 7, 3), 3, 1, 'SAME'),
    ((2, 5, 7, 3), 3, 2, 'SAME'),
    ((2, 8, 8, 4), 3, 2, 'SAME'),
    ((2, 2, 2, 8), 3, 1, 'SAME'),  # The kernel covers the whole map (ResNet-50 stage 5).
    ((2, 7, 6, 4), 3, 1, 'VALID'),
    pytest.param((2, 9, 9, 3), 7, 2, ((3, 3), (3, 3)),  # The ImageNet stem, scaled down.
                 marks=pytest.mark.slow),  # 49 slices' gradients compile for seconds.
    pytest.param((2, 9, 9, 4), 5, 2, ((3, 2), (1, 3)),  # Asymmetric explicit padding.
                 marks=pytest.mark.slow),
    ((2, 5, 5, 4), 2, 1, 'VALID'),
    ((2, 5, 5, 4), 4, 3, 'SAME'),
    ((2, 6, 6, 4), 1, 1, 'VALID'),
    ((2, 7, 7, 4), 1, 2, 'VALID'),
    ((2, 6, 6, 4), 1, 1, 'SAME'),
    ((2, 6, 6, 4), 1, 1, ((-1, 0), (0, -1))),  # Negative padding crops.
    ((2, 6, 6, 4), 1, 2, ((1, 1), (1, 1))),  # A padded 1x1 is not pointwise: im2col.
]


def _inputs(shape, k, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, shape[3], 5)), jnp.float32)
  return x, w


def _conv(impl, x, w, stride, padding):
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  kwargs = dict(dimension_numbers=dn, precision=HIGHEST)
  if impl == 'xla':
    return lax.conv_general_dilated(x, w, (stride, stride), padding, **kwargs)
  return conv_lib.conv_general_dilated(x, w, (stride, stride), padding, conv_impl=impl,
                                       **kwargs)


@pytest.mark.parametrize('shape,k,stride,padding', CASES)
def test_matmul_formulations_equal_lax_conv_forward_and_gradients(shape, k, stride, padding):
  x, w = _inputs(shape, k, seed=k * 10 + stride)
  want = _conv('xla', x, w, stride, padding)
  got = _conv('matmul', x, w, stride, padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, **TOL)
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(want.shape), jnp.float32)
  grads = lambda impl: jax.grad(lambda a, b: jnp.sum(_conv(impl, a, b, stride, padding)
                                                     * cotangent), argnums=(0, 1))(x, w)
  for got_grad, want_grad in zip(grads('matmul'), grads('xla')):
    np.testing.assert_allclose(got_grad, want_grad, **TOL)


@pytest.mark.parametrize('shape,k,stride,padding', CASES)
def test_matmul_formulations_are_what_they_claim(shape, k, stride, padding):
  """'matmul' takes a matmul formulation for every case above, forward and backward: none
  falls back to lax (the products sit inside channel_product's custom VJP)."""
  x, w = _inputs(shape, k)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  conv = functools.partial(conv_lib.conv_general_dilated, window_strides=(stride, stride),
                           padding=padding, dimension_numbers=dn, conv_impl='matmul')
  for program in (conv, jax.grad(lambda a, b: jnp.sum(conv(a, b)), argnums=(0, 1))):
    text = str(jax.make_jaxpr(program)(x, w))
    assert 'conv_general_dilated' not in text and 'dot_general' in text


@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('impl', ['auto', 'matmul'])
def test_nn_conv_with_an_impl_has_nn_convs_parameters_and_output(impl, use_bias):
  x, _ = _inputs((2, 6, 5, 3), 3)
  make = lambda fn: nn.Conv(4, (3, 3), strides=(2, 2), use_bias=use_bias,
                            bias_init=nn.initializers.normal(1.0), precision=HIGHEST,
                            conv_general_dilated=fn)
  plain, chosen = make(None), make(conv_lib.conv_general_dilated_fn(impl))
  want, got = plain.init(jax.random.key(3), x), chosen.init(jax.random.key(3), x)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)  # Bitwise: the same RNG use.
  np.testing.assert_allclose(chosen.apply(want, x), plain.apply(want, x), **TOL)


def _small_resnet50(conv_impl):
  """ResNet-50's structure (padded 7x7/2 stem, bottlenecks, projection shortcuts, four
  stages) with fewer blocks and narrower stages. At 64x64 it has every conv shape class
  of ResNet-50 at 64x64: 1x1 at strides 1 and 2, the stem on RGB, 3x3s over few and over
  many channels on maps larger than the kernel, and a 3x3 that covers a 2x2 map; see
  test_small_resnet_has_every_conv_class_that_auto_tells_apart.
  """
  return create_model('resnet50', num_classes=6, conv_impl=conv_impl, stage_sizes=(2, 1, 1, 1),
                      widths=(8, 16, 64, 64), stem_width=8)


def _formulations(monkeypatch, model, x):
  """{(formulation, kernel, input map, input channels)} of every conv `model` computes."""
  taken = set()
  choose = conv_lib.formulation_for

  def recording(conv_impl, kernel_hw, in_hw, in_channels, pads):
    name = choose(conv_impl, kernel_hw, in_hw, in_channels, pads)
    taken.add((name, tuple(kernel_hw), tuple(in_hw), in_channels))
    return name
  with monkeypatch.context() as patch:
    patch.setattr(conv_lib, 'formulation_for', recording)
    jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=True))
  return taken


def test_small_resnet_has_every_conv_class_that_auto_tells_apart(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  x = jnp.zeros((2, 64, 64, 3))
  auto = _formulations(monkeypatch, _small_resnet50('auto'), x)
  assert {name for name, *_ in auto} == {'xla', 'matmul', 'im2col'}
  im2col = [(k, hw, c) for name, k, hw, c in auto if name == 'im2col']
  assert ((7, 7), (64, 64), 3) in im2col  # The stem on RGB (few channels).
  assert any(k == (3, 3) and c < 16 and min(hw) > 3 for k, hw, c in im2col)
  assert any(k == (3, 3) and c >= 16 and hw == (2, 2) for k, hw, c in im2col)  # Covers it.
  assert any(k == (3, 3) and c >= 64 and 2 < min(hw) <= 16 for k, hw, c in im2col)  # Wide.
  assert any(name == 'xla' and k == (3, 3) for name, k, _, _ in auto)
  matmul = _formulations(monkeypatch, _small_resnet50('matmul'), x)
  assert {name for name, *_ in matmul} == {'matmul', 'im2col'}
  # ResNet-50 itself at 64x64 has no conv of a kind the small one lacks.
  full = _formulations(monkeypatch, create_model('resnet50', num_classes=6, conv_impl='auto'),
                       x)
  kind = lambda entries: {(name, k, min(hw) <= 2, c < 16, c >= 64) for name, k, hw, c in entries}
  assert kind(full) <= kind(auto)


@pytest.mark.slow  # Compiles a ResNet two ways.
def test_resnet_variables_are_identical_and_outputs_equal_across_impls():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)), jnp.float32)
  impls = ('xla', 'matmul', 'auto')
  # ResNet-50 itself: the same variables (paths, shapes, dtypes) whatever the impl.
  shapes = {impl: jax.eval_shape(functools.partial(
      create_model('resnet50', num_classes=6, conv_impl=impl).init, train=False),
      jax.random.key(0), x) for impl in impls}
  for impl in impls[1:]:
    assert jax.tree_util.tree_flatten_with_path(shapes[impl]) == (
        jax.tree_util.tree_flatten_with_path(shapes['xla']))
  # A smaller one compiled, 'matmul' taking a matmul formulation for each of its (and so
  # ResNet-50's) conv classes: the same initial values, bit for bit, and the same outputs.
  impls = ('xla', 'matmul')
  models = {impl: _small_resnet50(impl) for impl in impls}
  init = {impl: jax.jit(functools.partial(m.init, train=False))(jax.random.key(0), x)
          for impl, m in models.items()}
  flat = {impl: jax.tree_util.tree_flatten_with_path(v)[0] for impl, v in init.items()}
  for impl in impls[1:]:
    assert [p for p, _ in flat[impl]] == [p for p, _ in flat['xla']]
    for (_, a), (_, b) in zip(flat[impl], flat['xla']):
      np.testing.assert_array_equal(a, b)
  variables = init['xla']

  # Gradients in inference mode: with batch statistics of 2 examples on a 2x2 map, the
  # backward pass through many batch norms amplifies last-bit differences chaotically.
  def outputs(model, params):
    """Train-mode logits, eval-mode logits and their gradients: one compilation per impl."""
    train_logits = model.apply({**variables, 'params': params}, x, train=True,
                               mutable=['batch_stats'])[0]
    def loss(params):
      logits = model.apply({**variables, 'params': params}, x, train=False)
      return jnp.sum(logits ** 2), logits
    (_, eval_logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return train_logits, eval_logits, grads

  results = {impl: jax.jit(functools.partial(outputs, m))(variables['params'])
             for impl, m in models.items()}
  want_train, want_eval, want_grads = results['xla']
  for impl in impls[1:]:
    got_train, got_eval, got_grads = results[impl]
    np.testing.assert_allclose(got_train, want_train, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_eval, want_eval, rtol=1e-4, atol=1e-4)
    assert jax.tree.structure(got_grads) == jax.tree.structure(want_grads)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      scale = float(jnp.max(jnp.abs(b))) + 1e-6
      np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-3)


@pytest.mark.parametrize('kernel,in_hw,channels,pads,want', [
    ((1, 1), (15, 15), 64, [(0, 0), (0, 0)], 'matmul'),
    ((3, 3), (2, 2), 512, [(1, 1), (1, 1)], 'im2col'),  # The kernel covers the map.
    ((7, 7), (64, 64), 3, [(3, 3), (3, 3)], 'im2col'),  # A stem on RGB.
    ((3, 3), (15, 15), 64, [(1, 1), (1, 1)], 'im2col'),  # Wide on a small map: ResNet-50's.
    ((3, 3), (8, 8), 64, [(1, 1), (1, 1)], 'im2col'),  # CIFAR's last stage, the same rule.
    ((3, 3), (16, 16), 32, [(1, 1), (1, 1)], 'xla'),  # CIFAR's narrower 3x3s: XLA measured
    ((3, 3), (32, 32), 16, [(1, 1), (1, 1)], 'xla'),  # faster.
    ((3, 3), (28, 28), 128, [(1, 1), (1, 1)], 'xla'),  # ImageNet-sized maps: not measured.
])
def test_auto_takes_matmul_formulations_on_cpu_only(monkeypatch, kernel, in_hw, channels, pads,
                                                    want):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert conv_lib.formulation_for('auto', kernel, in_hw, channels, pads) == want
  assert conv_lib.formulation_for('xla', kernel, in_hw, channels, pads) == 'xla'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert conv_lib.formulation_for('auto', kernel, in_hw, channels, pads) == 'xla'
  assert conv_lib.formulation_for('matmul', kernel, in_hw, channels, pads) == want.replace(
      'xla', 'im2col')


def test_conv_impl_is_checked_by_the_model_and_the_config():
  with pytest.raises(ConfigError, match='conv_impl'):
    create_model('resnet50', conv_impl='winograd')
  config = config_lib.base_config()
  config.speed.conv_impl = 'winograd'
  with pytest.raises(ConfigError, match=r'config\.speed\.conv_impl'):
    config_lib.validate_config(config, check_dataset=False)
  assert config_lib.CONV_IMPLS == conv_lib.CONV_IMPLS


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_channel_products_written_out_gradient_is_autodiffs(dtype):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((2, 3, 4, 6)), dtype)
  kernel = jnp.asarray(rng.standard_normal((6, 5)), dtype)
  cotangent = jnp.asarray(rng.standard_normal((2, 3, 4, 5)), dtype)
  plain = lambda a, b: lax.dot_general(a, b, (((3,), (0,)), ((), ())))
  want_out, want_vjp = jax.vjp(plain, x, kernel)
  got_out, got_vjp = jax.vjp(conv_lib.channel_product, x, kernel)
  np.testing.assert_array_equal(got_out, want_out)
  for got, want in zip(got_vjp(cotangent), want_vjp(cotangent)):
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tol, atol=tol)
