"""Keras h5 weights into Flax, checked against Keras 3 itself (JAX backend).

Two Keras references, each with random weights and random BatchNorm moving
statistics (so inference mode really uses them), each built once per module:
Keras Applications' ResNet50 (`weights=None`) and the course's notebook ResNet50.
Each is written in the h5 layouts Keras uses, read back with `load_keras_h5`, and
the Flax model must give Keras's class probabilities to 1e-5 (and, for Keras
Applications, its logits to 1e-4 relative). Forward passes run eagerly, batch 2.
"""
import shutil

import h5py
import jax
import keras
import numpy as np
import pytest

from resnet_jax.errors import WeightsError
from resnet_jax.models import create_model
from resnet_jax.weights import load_keras_h5, read_keras_h5

pytestmark = pytest.mark.slow  # Keras reference models.

PROB_ATOL = 1e-5
LOGIT_RTOL = 1e-4


def randomize(model, seed):
  """Random conv/dense biases and BN gamma, beta, moving mean and variance."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape
      values = [rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c),
                rng.normal(0.0, 0.5, c), rng.uniform(0.5, 2.0, c)]
      layer.set_weights([v.astype(np.float32) for v in values])
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
      kernel, bias = layer.get_weights()  # Convs without a bias (ResNetV2's) keep theirs.
      layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape).astype(np.float32)])


def write_keras2_weights(path, model, exclude=()):
  """Writes `model`'s weights as Keras 2's `save_weights('x.h5')` did.

  The layout of Keras Applications' downloads: root attributes layer_names (every
  layer, in model order), backend and keras_version; one group per layer (created
  in name order) with attribute weight_names, trainable weights first, each
  stored at '<layer>/<weight>:0' inside the group. Keras 3 has no public writer of
  this layout. Layers named in `exclude` are left out, as in a `_notop` file.
  """
  layers = [layer for layer in model.layers if layer.name not in exclude]
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = np.array([layer.name.encode() for layer in layers])
    f.attrs['backend'] = b'tensorflow'
    f.attrs['keras_version'] = b'2.2.4'
    for layer in sorted(layers, key=lambda layer: layer.name):
      group = f.create_group(layer.name)
      weights = layer.trainable_weights + layer.non_trainable_weights
      names = [f'{layer.name}/{w.name}:0'.encode() for w in weights]
      group.attrs['weight_names'] = np.array(names, dtype='S')
      for name, weight in zip(names, weights):
        group.create_dataset(name.decode(), data=np.asarray(weight))


def strip_layer_names(source, target):
  """A copy of a Keras 3 .weights.h5 file without the layers' 'name' attributes, as
  Keras 3 releases before the one here (3.15) may write it."""
  shutil.copyfile(source, target)
  with h5py.File(target, 'r+') as f:
    groups = []
    f.visititems(lambda name, obj: groups.append(obj) if 'name' in obj.attrs else None)
    for group in groups:
      del group.attrs['name']


def informative_head(features, classes, seed):
  """A Dense kernel and bias giving these features logits of spread ~2: neither
  uniform nor one-hot probabilities, whatever scale the random backbone gives them."""
  rng = np.random.default_rng(seed)
  kernel = rng.normal(0.0, 1.0, (features.shape[-1], classes))
  kernel *= 2.0 / np.std(features @ kernel)
  return kernel.astype(np.float32), rng.normal(0.0, 0.1, classes).astype(np.float32)


def keras_outputs(model, x):
  return np.asarray(model(x, training=False), np.float32)


def flax_logits(model, variables, x):
  return np.asarray(model.apply(variables, x, train=False), np.float32)


def softmax(logits):
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def assert_logits_close(ours, theirs):
  """Relative to the logits' scale: max |ours - theirs| <= 1e-4 * max |theirs|."""
  error = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
  assert error <= LOGIT_RTOL, f'relative logit error {error:.2e}'


def assert_informative(probs):
  """Guards the comparison itself: probabilities far from uniform and from one-hot."""
  assert probs.max() < 0.999 and probs.max() > 3.0 / probs.shape[-1], probs.max()


def inputs(size, seed):
  # Inputs on the caffe-preprocessed scale (centred, spread of tens).
  return np.random.default_rng(seed).normal(0, 50, (2, size, size, 3)).astype(np.float32)


# --- the references ---------------------------------------------------------


def course_identity_block(x, f, filters):
  """The course's identity_block. Its BN calls take the model's training flag:
  the notebook's default `training=True` would freeze batch statistics into the
  graph, and these tests compare inference with the moving statistics."""
  f1, f2, f3 = filters
  shortcut = x
  x = keras.layers.Conv2D(f1, 1, strides=1, padding='valid')(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.Conv2D(f2, f, strides=1, padding='same')(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.Conv2D(f3, 1, strides=1, padding='valid')(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  x = keras.layers.Add()([x, shortcut])
  return keras.layers.Activation('relu')(x)


def course_convolutional_block(x, f, filters, s=2):
  """The course's convolutional_block (shortcut conv built after the main path)."""
  f1, f2, f3 = filters
  shortcut = x
  x = keras.layers.Conv2D(f1, 1, strides=s, padding='valid')(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.Conv2D(f2, f, strides=1, padding='same')(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.Conv2D(f3, 1, strides=1, padding='valid')(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  shortcut = keras.layers.Conv2D(f3, 1, strides=s, padding='valid')(shortcut)
  shortcut = keras.layers.BatchNormalization(axis=3)(shortcut)
  x = keras.layers.Add()([x, shortcut])
  return keras.layers.Activation('relu')(x)


def course_resnet50(input_shape=(64, 64, 3), classes=6):
  """The course's ResNet50, layer for layer (generated layer names)."""
  x_input = keras.Input(input_shape)
  x = keras.layers.ZeroPadding2D((3, 3))(x_input)
  x = keras.layers.Conv2D(64, (7, 7), strides=(2, 2))(x)
  x = keras.layers.BatchNormalization(axis=3)(x)
  x = keras.layers.Activation('relu')(x)
  x = keras.layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
  for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
    filters = [width, width, 4 * width]
    x = course_convolutional_block(x, 3, filters, s=1 if stage == 0 else 2)
    for _ in range(blocks - 1):
      x = course_identity_block(x, 3, filters)
  x = keras.layers.AveragePooling2D(pool_size=(2, 2))(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(classes, activation='softmax')(x)
  return keras.Model(inputs=x_input, outputs=x)


@pytest.fixture(scope='module')
def applications(tmp_path_factory):
  """Keras Applications ResNet50 at 224 and 64 (same weights), written four ways."""
  out = tmp_path_factory.mktemp('applications')
  keras.utils.set_random_seed(0)  # Keras's own initialisers: the kernels.
  at_224 = keras.applications.ResNet50(weights=None, classifier_activation=None)
  randomize(at_224, seed=0)
  at_64 = keras.applications.ResNet50(weights=None, classifier_activation=None,
                                      input_shape=(64, 64, 3))
  at_64.set_weights(at_224.get_weights())
  write_keras2_weights(out / 'weights.h5', at_224)
  write_keras2_weights(out / 'notop.h5', at_224, exclude=('avg_pool', 'predictions'))
  at_224.save(str(out / 'full.h5'))
  at_224.save_weights(str(out / 'keras3.weights.h5'))
  return dict(at_224=at_224, at_64=at_64, weights=out / 'weights.h5',
              notop=out / 'notop.h5', full=out / 'full.h5',
              keras3=out / 'keras3.weights.h5')


@pytest.fixture(scope='module')
def applications_notop(tmp_path_factory, applications):
  """ResNet50(include_top=False) with the same weights, written by Keras 3 as
  .weights.h5 (with layer names, and a copy without) and as a legacy full-model h5."""
  out = tmp_path_factory.mktemp('applications_notop')
  model = keras.applications.ResNet50(weights=None, include_top=False,
                                      input_shape=(64, 64, 3))
  for layer in model.layers:
    if layer.weights:
      layer.set_weights(applications['at_64'].get_layer(layer.name).get_weights())
  model.save_weights(str(out / 'notop.weights.h5'))
  strip_layer_names(out / 'notop.weights.h5', out / 'unnamed.weights.h5')
  model.save(str(out / 'notop.h5'))
  return dict(model=model, files={'keras3': out / 'notop.weights.h5',
                                  'keras3_unnamed': out / 'unnamed.weights.h5',
                                  'legacy_full_model': out / 'notop.h5'})


@pytest.fixture(scope='module')
def course(tmp_path_factory):
  """The course's ResNet50 (64x64, 6 classes), written three ways."""
  out = tmp_path_factory.mktemp('course')
  keras.utils.set_random_seed(1)
  model = course_resnet50()
  randomize(model, seed=1)
  write_keras2_weights(out / 'weights.h5', model)
  model.save(str(out / 'full.h5'))
  model.save_weights(str(out / 'keras3.weights.h5'))
  x = inputs(64, seed=2)
  return dict(model=model, x=x, probs=keras_outputs(model, x),
              files={'weights_only': out / 'weights.h5', 'full_model': out / 'full.h5',
                     'keras3_weights': out / 'keras3.weights.h5'})


@pytest.fixture(scope='module')
def keras_layout():
  return create_model('resnet50', layout='keras')


@pytest.fixture(scope='module')
def applications_variables(applications, keras_layout):
  return load_keras_h5(applications['weights'], keras_layout)


@pytest.fixture(scope='module')
def six_classes():
  """A 6-class Keras-layout ResNet50 and stand-in fresh variables (for new heads).

  The loader takes only the shapes and the head from init_variables; a random
  head on zeros stands in for `model.init`, which takes ~20 s on this CPU.
  """
  model = create_model('resnet50', layout='keras', num_classes=6)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.zeros((1, 64, 64, 3)), train=False))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  rng = np.random.default_rng(7)
  fresh['params']['head'] = {
      'kernel': rng.normal(0, 0.05, (2048, 6)).astype(np.float32),
      'bias': rng.normal(0, 0.1, (6,)).astype(np.float32)}
  return model, fresh


# --- Keras Applications -----------------------------------------------------


def test_applications_weights_file_matches_keras_at_224(
    applications, keras_layout, applications_variables):
  x = inputs(224, seed=3)
  theirs = keras_outputs(applications['at_224'], x)
  ours = flax_logits(keras_layout, applications_variables, x)
  assert_informative(softmax(theirs))
  np.testing.assert_allclose(softmax(ours), softmax(theirs), rtol=0, atol=PROB_ATOL)
  # Issue 2: the full ResNet50 against layout='keras', logits to 1e-4 relative.
  assert_logits_close(ours, theirs)


def test_applications_full_model_file_matches_keras_at_64(
    applications, keras_layout, applications_variables):
  assert read_keras_h5(applications['full']).layout == 'full_model'
  assert read_keras_h5(applications['weights']).layout == 'weights_only'
  variables = load_keras_h5(applications['full'], keras_layout)
  # Both layouts hold the same numbers, so they give identical variables.
  jax.tree.map(np.testing.assert_array_equal, variables, applications_variables)
  x = inputs(64, seed=4)
  theirs = keras_outputs(applications['at_64'], x)
  ours = flax_logits(keras_layout, variables, x)
  assert_informative(softmax(theirs))
  np.testing.assert_allclose(softmax(ours), softmax(theirs), rtol=0, atol=PROB_ATOL)
  assert_logits_close(ours, theirs)


def test_notop_file_loads_with_new_head(applications, applications_variables,
                                        six_classes):
  model, fresh = six_classes
  variables = load_keras_h5(applications['notop'], model, init_variables=fresh)
  np.testing.assert_array_equal(variables['params']['head']['kernel'],
                                fresh['params']['head']['kernel'])
  backbone = {k: v for k, v in variables['params'].items() if k != 'head'}
  expected = {k: v for k, v in applications_variables['params'].items() if k != 'head'}
  jax.tree.map(np.testing.assert_array_equal, backbone, expected)
  jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'],
               applications_variables['batch_stats'])
  # Numerically: Keras's pooled features through the new head.
  x = inputs(64, seed=5)
  keras_at_64 = applications['at_64']
  features = keras.Model(keras_at_64.input, keras_at_64.get_layer('avg_pool').output)
  head = fresh['params']['head']
  theirs = keras_outputs(features, x) @ np.asarray(head['kernel']) + np.asarray(head['bias'])
  assert_logits_close(flax_logits(model, variables, x), theirs)


def test_notop_file_without_init_variables_is_an_error(applications, six_classes):
  with pytest.raises(WeightsError, match=r'no classifier \(a notop file\).*head'):
    load_keras_h5(applications['notop'], six_classes[0])


def test_head_of_another_class_count(applications, applications_variables, six_classes):
  model, fresh = six_classes
  with pytest.raises(WeightsError) as error:
    load_keras_h5(applications['weights'], model)
  message = str(error.value)
  for part in ("'predictions'", 'head', '(2048, 6)', '(2048, 1000)', 'skip_head',
               str(applications['weights'])):
    assert part in message
  variables = load_keras_h5(applications['weights'], model, init_variables=fresh,
                            skip_head=True)
  jax.tree.map(np.testing.assert_array_equal, variables['params']['head'],
               jax.tree.map(np.asarray, fresh['params']['head']))
  jax.tree.map(np.testing.assert_array_equal, variables['params']['stage4_block3'],
               applications_variables['params']['stage4_block3'])


def test_applications_file_in_another_layout_is_named(applications):
  # torchvision's layout has no conv biases: the first conv already differs.
  model = create_model('resnet50', layout='torchvision')
  with pytest.raises(WeightsError, match=r"'conv1_conv'.*stem_conv.*kernel \(7, 7, 3, 64\)\]"
                     r".*bias \(64,\)"):
    load_keras_h5(applications['weights'], model)


# Issue 15: Keras 3's own save_weights('x.weights.h5') of Keras Applications' ResNet50.


@pytest.mark.slow
def test_applications_keras3_file_matches_keras_at_64(
    tmp_path, applications, keras_layout, applications_variables):
  """With the layer names Keras 3.15 stores, and without them (older Keras 3), the
  file gives the legacy files' variables and Keras's probabilities."""
  unnamed = tmp_path / 'unnamed.weights.h5'
  strip_layer_names(applications['keras3'], unnamed)
  x = inputs(64, seed=6)
  theirs = keras_outputs(applications['at_64'], x)
  assert_informative(softmax(theirs))
  for path in (applications['keras3'], unnamed):
    weights = read_keras_h5(path)
    assert weights.layout == 'keras3_weights'
    assert ('conv2_block1_0_conv' in weights.layers) == (path != unnamed)
    variables = load_keras_h5(path, keras_layout)
    jax.tree.map(np.testing.assert_array_equal, variables, applications_variables)
    ours = flax_logits(keras_layout, variables, x)
    np.testing.assert_allclose(softmax(ours), softmax(theirs), rtol=0, atol=PROB_ATOL)
    assert_logits_close(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize('file', ['keras3', 'keras3_unnamed', 'legacy_full_model'])
def test_applications_notop_files_match_keras_with_new_head(
    applications_notop, applications_variables, six_classes, file):
  model, fresh = six_classes
  variables = load_keras_h5(applications_notop['files'][file], model,
                            init_variables=fresh)
  backbone = {k: v for k, v in variables['params'].items() if k != 'head'}
  expected = {k: v for k, v in applications_variables['params'].items() if k != 'head'}
  jax.tree.map(np.testing.assert_array_equal, backbone, expected)
  jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'],
               applications_variables['batch_stats'])
  # Keras's notop features, pooled, through a new head.
  x = inputs(64, seed=7)
  features = keras_outputs(applications_notop['model'], x).mean(axis=(1, 2))
  kernel, bias = informative_head(features, 6, seed=10)
  variables['params']['head'] = {'kernel': kernel, 'bias': bias}
  theirs = features @ kernel + bias
  ours = flax_logits(model, variables, x)
  assert_informative(softmax(theirs))
  np.testing.assert_allclose(softmax(ours), softmax(theirs), rtol=0, atol=PROB_ATOL)
  assert_logits_close(ours, theirs)


@pytest.mark.slow
def test_stage2_shortcut_and_third_conv_are_not_swapped(applications_notop, six_classes):
  """In stage 2 (our stage1) Keras numbers the shortcut conv before the third conv
  and both have shape (1, 1, 64, 256): only names or the whole file's order can tell
  them apart. Each must land where Keras has it, from every Keras 3 file."""
  model, fresh = six_classes
  keras_model = applications_notop['model']
  pairs = {'proj_conv': ('conv2_block1_0_conv', 'kernel'),
           'conv3': ('conv2_block1_3_conv', 'kernel'),
           'proj_bn': ('conv2_block1_0_bn', 'scale'),
           'bn3': ('conv2_block1_3_bn', 'scale')}
  shortcut = keras_model.get_layer('conv2_block1_0_conv').get_weights()[0]
  third = keras_model.get_layer('conv2_block1_3_conv').get_weights()[0]
  assert shortcut.shape == third.shape and not np.allclose(shortcut, third)
  for file in ('keras3', 'keras3_unnamed'):
    block = load_keras_h5(applications_notop['files'][file], model,
                          init_variables=fresh)['params']['stage1_block1']
    for ours, (theirs, leaf) in pairs.items():
      expected = keras_model.get_layer(theirs).get_weights()[0]  # kernel or gamma
      np.testing.assert_array_equal(block[ours][leaf], expected, err_msg=f'{file}: {ours}')


@pytest.mark.slow
def test_keras3_file_of_a_fine_tuned_model_with_nested_base(tmp_path, applications_notop):
  """A Sequential around the notop base, as one fine-tunes in Keras 3: the base is
  stored nested, its layers under their own names (or keys, without names)."""
  tuned = keras.Sequential([applications_notop['model'],
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(6, activation='softmax')])
  tuned.build((None, 64, 64, 3))
  x = inputs(64, seed=9)
  features = keras_outputs(applications_notop['model'], x).mean(axis=(1, 2))
  tuned.layers[-1].set_weights(informative_head(features, 6, seed=8))
  path, unnamed = tmp_path / 'tuned.weights.h5', tmp_path / 'unnamed.weights.h5'
  tuned.save_weights(str(path))
  strip_layer_names(path, unnamed)
  theirs = keras_outputs(tuned, x)
  assert_informative(theirs)
  model = create_model('resnet50', layout='keras', num_classes=6)
  for file in (path, unnamed):
    probs = softmax(flax_logits(model, load_keras_h5(file, model), x))
    np.testing.assert_allclose(probs, theirs, rtol=0, atol=PROB_ATOL)


# --- the course's model -----------------------------------------------------


@pytest.mark.parametrize('layout,conv_impl', [
    ('weights_only', 'xla'), ('weights_only', 'matmul'), ('full_model', 'auto'),
    ('keras3_weights', 'auto')])
def test_course_files_match_keras_at_64(course, layout, conv_impl):
  path = course['files'][layout]
  assert read_keras_h5(path).layout == layout
  model = create_model('resnet50', layout='coursera', num_classes=6, conv_impl=conv_impl)
  variables = load_keras_h5(path, model)
  probs = softmax(flax_logits(model, variables, course['x']))
  assert_informative(course['probs'])
  np.testing.assert_allclose(probs, course['probs'], rtol=0, atol=PROB_ATOL)
  # Every layout holds the same numbers, so they give identical variables.
  jax.tree.map(np.testing.assert_array_equal, variables,
               load_keras_h5(course['files']['full_model'], model))


def test_course_file_order_puts_shortcut_after_third_conv(course):
  """The rule the order-based mapping relies on, as Keras writes it."""
  names = list(read_keras_h5(course['files']['full_model']).layers)
  convs = [n for n in names if n.startswith('conv2d')]
  bns = [n for n in names if n.startswith('batch_normalization')]
  # Stem conv2d, then the first convolutional block: three main convs, shortcut.
  assert convs[:5] == ['conv2d', 'conv2d_1', 'conv2d_2', 'conv2d_3', 'conv2d_4']
  assert bns[:5] == ['batch_normalization'] + [f'batch_normalization_{i}'
                                                for i in range(1, 5)]
  shortcut = read_keras_h5(course['files']['full_model']).layers['conv2d_4']
  assert shortcut.shapes == ((1, 1, 64, 256), (256,))
  # The file's layer order lists the shortcut conv right after the third main conv.
  assert names.index('conv2d_4') == names.index('conv2d_3') + 1
