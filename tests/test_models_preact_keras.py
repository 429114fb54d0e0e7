"""The pre-activation family equals Keras Applications' ResNetV2, through its h5 files.

The Keras side is Keras's own ResNetV2 code (keras.src.applications.resnet: `ResNet`
with `stack_residual_blocks_v2`, as ResNet50V2 builds itself), on a small stack so that
it builds and runs in a second: two stages of (3, 2) blocks, which hold every shortcut
ResNetV2 has (the projection opening a stage, the identity, and the 1x1 max-pool of the
strided last block of a stage). Random kernels, BN parameters and moving statistics;
written as Keras Applications' weights-only file and as a full-model file, read back by
`load_keras_h5`; our model must give Keras's logits in eval mode and, in train mode,
Keras's logits and updated moving statistics (1e-5). ResNet50V2 itself is compared once,
at 32x32, in eval mode.
"""
import jax
import keras
import numpy as np
import pytest
from keras.src.applications import resnet as keras_resnet
from test_weights_keras_h5 import randomize, write_keras2_weights

from resnet_jax.models import ResNet, create_model
from resnet_jax.weights import load_keras_h5

pytestmark = pytest.mark.slow  # Keras reference models.

TOL = 1e-5
STAGES = (3, 2)
WIDTHS = (4, 8)


def small_keras_v2(size=32, classes=5):
  """ResNetV2 of two stacks, built by Keras's own ResNetV2 code."""
  def stack_fn(x):
    x = keras_resnet.stack_residual_blocks_v2(x, WIDTHS[0], STAGES[0], name='conv2')
    return keras_resnet.stack_residual_blocks_v2(x, WIDTHS[1], STAGES[1], stride1=1,
                                                 name='conv3')
  return keras_resnet.ResNet(stack_fn, True, True, weights=None, input_shape=(size, size, 3),
                             classes=classes, classifier_activation=None, name='small_v2')


def small_flax_v2(**overrides):
  return ResNet(stage_sizes=STAGES, widths=WIDTHS, num_classes=5, design='full_preact',
                layout='keras', **overrides)


def assert_close(ours, theirs):
  """Within 1e-5 of Keras, relative to the largest value (and elementwise 1e-5 relative)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=TOL * np.max(np.abs(theirs)))


def inputs(size, seed, n=4):
  return np.random.default_rng(seed).normal(0, 1.0, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def small(tmp_path_factory):
  out = tmp_path_factory.mktemp('small_v2')
  keras.utils.set_random_seed(3)
  model = small_keras_v2()
  randomize(model, seed=3)
  write_keras2_weights(out / 'weights.h5', model)
  model.save(str(out / 'full.h5'))
  return dict(model=model, dir=out, files={'weights_only': out / 'weights.h5',
                                           'full_model': out / 'full.h5'})


@pytest.mark.parametrize('layout', ['weights_only', 'full_model'])
def test_small_v2_equals_keras_in_eval_mode(small, layout):
  x = inputs(32, seed=4)
  ours_model = small_flax_v2()
  variables = load_keras_h5(small['files'][layout], ours_model)
  theirs = np.asarray(small['model'](x, training=False))
  assert np.std(theirs) > 1e-2  # a comparison of informative outputs
  assert_close(ours_model.apply(variables, x, train=False), theirs)


def test_small_v2_equals_keras_in_train_mode_with_moving_statistics(small, tmp_path):
  """Batch statistics in the outputs; Keras's updated moving statistics, written to a
  file and read back, equal the batch_stats our train step returns."""
  x = inputs(32, seed=5)
  model = small['model']
  ours_model = small_flax_v2()
  variables = load_keras_h5(small['files']['weights_only'], ours_model)
  call = jax.jit(model.stateless_call, static_argnames=['training'])
  theirs, moving = call([v.value for v in model.trainable_variables],
                        [v.value for v in model.non_trainable_variables], x, training=True)
  ours, updated = ours_model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert_close(ours, theirs)

  trained = small_keras_v2()
  trained.set_weights(model.get_weights())
  for variable, value in zip(trained.non_trainable_variables, moving):
    variable.assign(value)
  write_keras2_weights(tmp_path / 'updated.h5', trained)
  want = load_keras_h5(tmp_path / 'updated.h5', ours_model)['batch_stats']
  assert not np.allclose(want['post_bn']['mean'], variables['batch_stats']['post_bn']['mean'])
  jax.tree.map(assert_close, updated['batch_stats'], want)


def test_small_v2_names_and_shortcuts_are_keras_resnetv2s(small):
  """Keras's stride sits on the last block of a stage, whose shortcut has no conv."""
  variables = load_keras_h5(small['files']['weights_only'], small_flax_v2())
  params = variables['params']
  assert 'stem_bn' not in params and 'post_bn' in params
  assert set(params['stage1_block1']) == {'preact_bn', 'conv1', 'bn1', 'conv2', 'bn2', 'conv3',
                                          'proj_conv'}
  assert set(params['stage1_block3']) == {'preact_bn', 'conv1', 'bn1', 'conv2', 'bn2', 'conv3'}
  assert set(params['stage1_block1']['conv1']) == {'kernel'}  # BN follows: no bias
  assert set(params['stage1_block1']['conv3']) == {'kernel', 'bias'}
  rows = {layer.name: layer.output.shape for layer in small['model'].layers}
  assert rows['conv2_block2_out'][1] == 8 and rows['conv2_block3_out'][1] == 4


def test_resnet50v2_equals_keras_applications(tmp_path):
  """The named model is Keras Applications' ResNet50V2 (weights-only file, eval mode)."""
  keras.utils.set_random_seed(6)
  theirs_model = keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3),
                                               classifier_activation=None)
  randomize(theirs_model, seed=6)
  write_keras2_weights(tmp_path / 'resnet50v2.h5', theirs_model)
  model = create_model('resnet50v2')
  variables = load_keras_h5(tmp_path / 'resnet50v2.h5', model)
  x = inputs(32, seed=7, n=2)
  theirs = np.asarray(theirs_model(x, training=False))
  assert np.std(theirs) > 1e-2
  assert_close(model.apply(variables, x, train=False), theirs)
