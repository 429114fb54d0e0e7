"""The Flax blocks equal the course's Keras blocks, number for number.

The Keras side is built with keras.layers exactly as the course's notebook builds its
identity_block / convolutional_block (Conv2D, BatchNormalization(axis=3), Activation,
Add), with random weights and moving statistics; the weights are copied across and
outputs (and, in train mode, the updated moving statistics) compared.

The references' batch-norm constants are written out here, never read from resnet_jax's
layouts (the values under test); the fast tests check that every block's batch norm uses
them, down to a wrong last digit of epsilon that no output comparison at 1e-5 would see.
"""
import math

import flax.linen as nn
import jax
import keras
import numpy as np
import pytest

from resnet_jax.models import BasicBlock, ConvolutionalBlock, IdentityBlock, get_layout
from resnet_jax.models.layouts import conv_and_norm

slow = pytest.mark.slow  # Keras reference models.

TOL = dict(rtol=1e-5, atol=1e-5)

# The references' constants. keras.layers.BatchNormalization's defaults, which the course's
# notebook keeps: momentum 0.99 (Keras's convention is Flax's), epsilon 1e-3. Keras
# Applications' ResNet50 and ResNet50V2 pass epsilon=1.001e-5 to every BatchNormalization
# (keras/src/applications/resnet.py). torch.nn.BatchNorm2d: eps 1e-5, momentum 0.1 in
# PyTorch's convention, i.e. 0.9 in Flax's.
KERAS_BN_MOMENTUM = 0.99
COURSE_BN_EPSILON = 1e-3
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
TORCH_BN_EPSILON, TORCH_BN_MOMENTUM = 1e-5, 1 - 0.1
REFERENCE_BN = {'coursera': (COURSE_BN_EPSILON, KERAS_BN_MOMENTUM),
                'keras': (KERAS_APPLICATIONS_BN_EPSILON, KERAS_BN_MOMENTUM),
                'torchvision': (TORCH_BN_EPSILON, TORCH_BN_MOMENTUM)}


@pytest.fixture(params=['xla', 'matmul'])
def conv_impl(request):
  """Every equality below holds with XLA's convolution and with the matmul formulations."""
  return request.param


def _keras_conv_bn(x, name, filters, kernel, strides, padding, training, epsilon):
  # Zero initializers keep building cheap; every value is replaced by random ones.
  x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                          kernel_initializer='zeros', name=f'conv{name}')(x)
  return keras.layers.BatchNormalization(axis=3, epsilon=epsilon, momentum=KERAS_BN_MOMENTUM,
                                         name=f'bn{name}')(x, training=training)


def keras_identity_block(x, f, filters, training, epsilon=COURSE_BN_EPSILON):
  """The course's identity_block, in keras.layers."""
  f1, f2, f3 = filters
  shortcut = x
  x = _keras_conv_bn(x, '1', f1, 1, 1, 'valid', training, epsilon)
  x = keras.layers.Activation('relu')(x)
  x = _keras_conv_bn(x, '2', f2, f, 1, 'same', training, epsilon)
  x = keras.layers.Activation('relu')(x)
  x = _keras_conv_bn(x, '3', f3, 1, 1, 'valid', training, epsilon)
  x = keras.layers.Add()([x, shortcut])
  return keras.layers.Activation('relu')(x)


def keras_convolutional_block(x, f, filters, s, training, epsilon=COURSE_BN_EPSILON):
  """The course's convolutional_block, in keras.layers."""
  f1, f2, f3 = filters
  shortcut = x
  x = _keras_conv_bn(x, '1', f1, 1, s, 'valid', training, epsilon)
  x = keras.layers.Activation('relu')(x)
  x = _keras_conv_bn(x, '2', f2, f, 1, 'same', training, epsilon)
  x = keras.layers.Activation('relu')(x)
  x = _keras_conv_bn(x, '3', f3, 1, 1, 'valid', training, epsilon)
  shortcut = _keras_conv_bn(shortcut, '_proj', f3, 1, s, 'valid', training, epsilon)
  x = keras.layers.Add()([x, shortcut])
  return keras.layers.Activation('relu')(x)


def keras_basic_block(x, f, filters, s, training, epsilon):
  """A two-conv block with Keras 'same' padding and a projection when shape changes."""
  shortcut = x
  x = _keras_conv_bn(x, '1', filters, f, s, 'same', training, epsilon)
  x = keras.layers.Activation('relu')(x)
  x = _keras_conv_bn(x, '2', filters, f, 1, 'same', training, epsilon)
  if s != 1 or shortcut.shape[-1] != filters:
    shortcut = _keras_conv_bn(shortcut, '_proj', filters, 1, s, 'valid', training,
                              epsilon)
  x = keras.layers.Add()([x, shortcut])
  return keras.layers.Activation('relu')(x)


def _random_values(model, rng):
  """Random kernels, biases, gammas, betas and moving statistics (variances > 0)."""
  values = {}
  for v in model.variables:
    shape = tuple(v.shape)
    kind = v.path.split('/')[-1]
    if kind == 'kernel':
      values[v.path] = rng.normal(0, 1 / math.sqrt(np.prod(shape[:3])), shape)
    elif kind in ('gamma', 'moving_variance'):
      values[v.path] = rng.uniform(0.5, 2.0, shape)
    else:  # conv bias, beta, moving_mean
      values[v.path] = rng.normal(0, 0.3, shape)
  return {k: np.asarray(v, np.float32) for k, v in values.items()}


_FLAX_NAMES = {'kernel': ('params', 'kernel'), 'bias': ('params', 'bias'),
               'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
               'moving_mean': ('batch_stats', 'mean'),
               'moving_variance': ('batch_stats', 'var')}


def _to_flax(values):
  """Keras 'conv1/kernel'-style values -> Flax {'params', 'batch_stats'}."""
  variables = {'params': {}, 'batch_stats': {}}
  for path, value in values.items():
    layer, kind = path.split('/')
    layer = layer.replace('conv_proj', 'proj_conv').replace('bn_proj', 'proj_bn')
    collection, name = _FLAX_NAMES[kind]
    variables[collection].setdefault(layer, {})[name] = value
  return variables


def _compare(build_keras, flax_block, x, seed):
  """Builds the Keras block, gives both the same random weights, compares.

  First train mode (outputs and the updated moving statistics), then eval mode on
  those updated statistics. Keras runs through its jitted `stateless_call`.
  """
  inputs = keras.Input(x.shape[1:])
  # training=None in the graph: each call of the model picks the mode.
  model = keras.Model(inputs, build_keras(inputs, training=None))
  values = _random_values(model, np.random.default_rng(seed))
  variables = _to_flax(values)
  # Same structure: every Flax variable has its Keras counterpart and vice versa.
  expected = jax.eval_shape(lambda: flax_block.init(jax.random.key(0), x, train=False))
  assert jax.tree.map(np.shape, expected) == jax.tree.map(np.shape, variables)

  keras_call = jax.jit(model.stateless_call, static_argnames=['training'])
  trainable = [values[v.path] for v in model.trainable_variables]
  moving = [values[v.path] for v in model.non_trainable_variables]
  want, moving = keras_call(trainable, moving, x, training=True)
  got, updated = jax.jit(lambda v: flax_block.apply(
      v, x, train=True, mutable=['batch_stats']))(variables)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)
  moving = {v.path: np.asarray(m) for v, m in zip(model.non_trainable_variables, moving)}
  updated_stats = _to_flax(moving)['batch_stats']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL),
               updated['batch_stats'], updated_stats)
  assert not np.allclose(updated_stats['bn1']['mean'],
                         variables['batch_stats']['bn1']['mean'])

  variables['batch_stats'] = updated_stats
  want, _ = keras_call(trainable, list(moving.values()), x, training=False)
  got = jax.jit(lambda v: flax_block.apply(v, x, train=False))(variables)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


def _input(batch, size, channels, seed):
  rng = np.random.default_rng(seed)
  return rng.normal(0.5, 2.0, (batch, size, size, channels)).astype(np.float32)


IDENTITY_CASES = [  # filters, kernel_size, input size
    ((4, 4, 3), 2, 4),
    ((2, 4, 3), 3, 7),
    ((6, 5, 3), 4, 8),
    ((3, 8, 5), 5, 6),
    ((4, 4, 3), 1, 5),
]


@slow
@pytest.mark.parametrize('filters,kernel_size,size', IDENTITY_CASES)
def test_identity_block_equals_course_keras(filters, kernel_size, size, conv_impl):
  x = _input(3, size, filters[-1], seed=size)
  build = lambda inp, training: keras_identity_block(inp, kernel_size, filters, training)
  _compare(build, IdentityBlock(filters, kernel_size, conv_impl=conv_impl), x,
           seed=kernel_size)


CONV_CASES = [  # filters, kernel_size, strides, input size
    ((2, 4, 6), 3, 2, 8),
    ((4, 4, 3), 2, 1, 4),
    ((3, 5, 8), 4, 2, 7),
    ((4, 3, 5), 3, 3, 7),
    ((6, 6, 4), 5, 2, 9),
]


@slow
@pytest.mark.parametrize('filters,kernel_size,strides,size', CONV_CASES)
def test_convolutional_block_equals_course_keras(filters, kernel_size, strides, size,
                                                 conv_impl):
  x = _input(3, size, 3, seed=size)
  build = lambda inp, training: keras_convolutional_block(inp, kernel_size, filters,
                                                          strides, training)
  block = ConvolutionalBlock(filters, kernel_size, strides=strides, conv_impl=conv_impl)
  _compare(build, block, x, seed=strides)


@slow
@pytest.mark.parametrize('filters,strides,size,in_channels', [
    (4, 2, 8, 3), (5, 2, 7, 5), (4, 1, 6, 4)])
def test_basic_block_keras_layout_equals_keras(filters, strides, size, in_channels,
                                               conv_impl):
  x = _input(2, size, in_channels, seed=size)
  build = lambda inp, training: keras_basic_block(inp, 3, filters, strides, training,
                                                  KERAS_APPLICATIONS_BN_EPSILON)
  block = BasicBlock(filters, strides=strides, layout='keras', conv_impl=conv_impl)
  _compare(build, block, x, seed=filters)


# The course's public tests (identity_block_test), on constant kernels.
_COURSE_X = np.concatenate(
    [np.full((1, 4, 4, 3), v, np.float32) for v in (-1.0, 1.0, 3.0)])


def _course_reduction(y):
  return np.asarray(y)[:, (0, -1), :, :].mean(axis=3)


@slow
def test_identity_block_course_public_test_eval(conv_impl):
  block = IdentityBlock(filters=(4, 4, 3), kernel_size=2,
                        kernel_init=nn.initializers.ones, conv_impl=conv_impl)
  variables = block.init(jax.random.key(0), _COURSE_X, train=False)
  got = _course_reduction(block.apply(variables, _COURSE_X, train=False))
  want = np.array([
      [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
      [[192.71234, 192.71234, 192.71234, 96.85617],
       [96.85617, 96.85617, 96.85617, 48.92808]],
      [[578.1371, 578.1371, 578.1371, 290.5685],
       [290.5685, 290.5685, 290.5685, 146.78426]]])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@slow
def test_identity_block_course_public_test_train(conv_impl):
  block = IdentityBlock(filters=(3, 3, 3), kernel_size=3,
                        kernel_init=nn.initializers.ones, conv_impl=conv_impl)
  variables = block.init(jax.random.key(0), _COURSE_X, train=False)
  y, _ = block.apply(variables, _COURSE_X, train=True, mutable=['batch_stats'])
  got = _course_reduction(y)
  np.testing.assert_allclose(got[0], 0.0, atol=1e-6)
  np.testing.assert_allclose(got[1], np.full((2, 4), 0.37394285), rtol=1e-5)
  row = [3.2379014, 4.1394243, 4.1394243, 3.2379014]
  np.testing.assert_allclose(got[2], [row, row], rtol=1e-5)


def _reference_conv(x, kernel, stride, pads):
  """Direct NHWC convolution with explicit (lo, hi) padding, in numpy."""
  x = np.pad(x, ((0, 0), pads, pads, (0, 0)))
  k = kernel.shape[0]
  out = (x.shape[1] - k) // stride + 1
  y = np.zeros((x.shape[0], out, out, kernel.shape[-1]), np.float64)
  span = stride * (out - 1) + 1
  for i in range(k):
    for j in range(k):
      patch = x[:, i:i + span:stride, j:j + span:stride, :]
      y += np.einsum('nhwc,co->nhwo', patch, kernel[i, j])
  return y


def _tf_same_pads(size, k, stride):
  # TensorFlow's documented 'SAME': out = ceil(size / stride), the odd pixel after.
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return (total // 2, total - total // 2)


PADDING_CASES = (  # layout, kernel size, stride, input size
    [('keras', k, s, n) for k in (2, 3, 4) for s in (1, 2, 3) for n in (7, 8)]
    + [('torchvision', k, s, n) for k in (3, 5) for s in (1, 2) for n in (7, 8)])


@slow
@pytest.mark.parametrize('layout,k,stride,size', PADDING_CASES)
def test_conv_padding_follows_the_layouts_reference(layout, k, stride, size):
  """'tf' layouts pad as TF/Keras 'same'; torchvision pads k//2 on both sides."""
  rng = np.random.default_rng(k * 10 + stride)
  x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
  kernel = rng.normal(size=(k, k, 3, 4)).astype(np.float32)
  conv = nn.Conv(4, (k, k), strides=(stride, stride), use_bias=False,
                 padding=get_layout(layout).conv_padding(k))
  got = conv.apply({'params': {'kernel': kernel}}, x)
  pads = _tf_same_pads(size, k, stride) if layout == 'keras' else (k // 2, k // 2)
  want = _reference_conv(x.astype(np.float64), kernel.astype(np.float64), stride, pads)
  np.testing.assert_allclose(np.asarray(got), want, **TOL)


@slow
def test_tf_and_torch_padding_differ_for_strided_convs():
  """The two conventions align a strided 3x3 differently on an even input."""
  assert _tf_same_pads(8, 3, 2) == (0, 1)
  assert get_layout('torchvision').conv_padding(3) == ((1, 1), (1, 1))


# --- the placements of He et al. 2016, Fig. 4, each written out in keras.layers --------


def _k_conv(x, name, filters, k, s, bias, pad):
  if pad and k > 1:  # Keras ResNetV2's explicit symmetric padding before a 'valid' conv.
    x = keras.layers.ZeroPadding2D(k // 2)(x)
  return keras.layers.Conv2D(filters, k, strides=s, padding='valid' if pad else 'same',
                             use_bias=bias, kernel_initializer='zeros', name=name)(x)


def _k_bn(x, name, training):
  bn = keras.layers.BatchNormalization(axis=3, epsilon=KERAS_APPLICATIONS_BN_EPSILON,
                                       momentum=KERAS_BN_MOMENTUM, name=name)
  return bn(x, training=training)


def _relu(x):
  return keras.layers.Activation('relu')(x)


def keras_design_block(x, design, filters, s, training):
  """A basic block in the keras layout, in each placement of Fig. 4, written out."""
  relu, bn = _relu, lambda y, name: _k_bn(y, name, training)
  project = s != 1 or x.shape[-1] != filters
  if design == 'original':  # (a)
    y = bn(_k_conv(relu(bn(_k_conv(x, 'conv1', filters, 3, s, True, False), 'bn1')), 'conv2',
                   filters, 3, 1, True, False), 'bn2')
    short = bn(_k_conv(x, 'proj_conv', filters, 1, s, True, False), 'proj_bn') if project else x
    return relu(keras.layers.Add()([y, short]))
  if design == 'bn_after_add':  # (b)
    y = _k_conv(relu(bn(_k_conv(x, 'conv1', filters, 3, s, True, False), 'bn1')), 'conv2',
                filters, 3, 1, True, False)
    short = bn(_k_conv(x, 'proj_conv', filters, 1, s, True, False), 'proj_bn') if project else x
    return relu(bn(keras.layers.Add()([y, short]), 'add_bn'))
  if design == 'relu_before_add':  # (c)
    y = relu(bn(_k_conv(relu(bn(_k_conv(x, 'conv1', filters, 3, s, True, False), 'bn1')),
                        'conv2', filters, 3, 1, True, False), 'bn2'))
    short = bn(_k_conv(x, 'proj_conv', filters, 1, s, True, False), 'proj_bn') if project else x
    return keras.layers.Add()([y, short])
  if design == 'relu_preact':  # (d): biases only where no BN follows, as ResNetV2
    p = relu(x)
    y = bn(_k_conv(relu(bn(_k_conv(p, 'conv1', filters, 3, s, False, True), 'bn1')), 'conv2',
                   filters, 3, 1, False, True), 'bn2')
    short = bn(_k_conv(p, 'proj_conv', filters, 1, s, False, True), 'proj_bn') if project else x
    return keras.layers.Add()([y, short])
  # (e) full pre-activation: the projection takes the pre-activated input, no BN.
  p = relu(bn(x, 'preact_bn'))
  y = _k_conv(relu(bn(_k_conv(p, 'conv1', filters, 3, s, False, True), 'bn1')), 'conv2',
              filters, 3, 1, True, True)
  short = _k_conv(p, 'proj_conv', filters, 1, s, True, True) if project else x
  return keras.layers.Add()([y, short])


@slow
@pytest.mark.parametrize('design', ['original', 'bn_after_add', 'relu_before_add',
                                    'relu_preact', 'full_preact'])
@pytest.mark.parametrize('filters,strides,size,in_channels', [(5, 2, 8, 3), (4, 1, 6, 4)])
def test_every_fig4_placement_equals_keras(design, filters, strides, size, in_channels):
  x = _input(2, size, in_channels, seed=size + len(design))
  build = lambda inp, training: keras_design_block(inp, design, filters, strides, training)
  block = BasicBlock(filters, strides=strides, layout='keras', design=design, conv_impl='xla')
  _compare(build, block, x, seed=filters)


# --- the references' batch-norm constants (fast: no Keras model) ----------------------------


def _bn_constants(block, x):
  """(epsilon, momentum) of every batch norm the block calls, in order."""
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
      seen.append((context.module.epsilon, context.module.momentum))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    block.init(jax.random.key(0), x, train=True)
  return seen


BN_BLOCKS = {  # Each kind of block, with a projection shortcut where it has one.
    'identity': lambda **kw: IdentityBlock((2, 2, 3), 3, **kw),
    'convolutional': lambda **kw: ConvolutionalBlock((2, 2, 4), 3, strides=2, **kw),
    'basic': lambda **kw: BasicBlock(4, strides=2, **kw),
    'basic_full_preact': lambda **kw: BasicBlock(4, strides=2, design='full_preact', **kw),
}


@pytest.mark.parametrize('kind', sorted(BN_BLOCKS))
@pytest.mark.parametrize('layout', sorted(REFERENCE_BN))
def test_every_batch_norm_of_a_block_has_its_references_constants(kind, layout, conv_impl):
  """conv_impl 'xla' builds nn.BatchNorm, 'matmul' the closed-form batch norm."""
  block = BN_BLOCKS[kind](layout=layout, conv_impl=conv_impl)
  seen = _bn_constants(block, _input(2, 6, 3, seed=0))
  assert len(seen) >= 2 and set(seen) == {REFERENCE_BN[layout]}, seen


@pytest.mark.parametrize('layout', sorted(REFERENCE_BN))
def test_batch_norm_computes_with_its_references_constants(layout, conv_impl):
  """Eval mode on a zero running variance divides by sqrt(epsilon) (a wrong last digit of
  epsilon moves it by ~5e-4); train mode moves the running mean by (1 - momentum) of the
  batch mean."""
  epsilon, momentum = REFERENCE_BN[layout]
  _, norm = conv_and_norm(get_layout(layout), conv_impl=conv_impl)
  bn = norm()
  x = _input(4, 3, 2, seed=1)
  variables = bn.init(jax.random.key(0), x, use_running_average=True)
  variables['batch_stats'] = jax.tree.map(np.zeros_like, variables['batch_stats'])
  got = bn.apply(variables, x, use_running_average=True)
  np.testing.assert_allclose(np.asarray(got), x / np.sqrt(np.float32(epsilon)), rtol=1e-6)
  _, updated = bn.apply(variables, x, use_running_average=False, mutable=['batch_stats'])
  np.testing.assert_allclose(np.asarray(updated['batch_stats']['mean']),
                             (1 - momentum) * x.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-7)
