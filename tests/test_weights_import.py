"""The Keras h5 importer without Keras: file layouts, the mapping rules, the errors,
and the converter to an Orbax checkpoint.

Files are written here with h5py from the variables of a small model (CIFAR
ResNet-20 in the Keras layout, with projection shortcuts), under Keras
Applications names or the generated names of a course-style model, so that a
round trip must give back exactly the variables it started from. The Keras
reference itself is in test_weights_keras_h5.py.
"""
import os
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from resnet_jax.errors import CheckpointError, WeightsError
from resnet_jax.models import create_model
from resnet_jax.models.resnet import ResNet
from resnet_jax.weights import load_keras_h5, read_keras_h5, restore_variables, save_variables
from resnet_jax.weights.convert import convert_keras_h5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def model():
  return create_model('cifar_resnet20', layout='keras', shortcut='projection')


@pytest.fixture(scope='module')
def variables(model):
  """Random values everywhere (BN statistics too), as numpy float32."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                             train=False))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


def keras_layers(variables, naming, shortcut_first=False):
  """[(layer name, [(weight name, array)])] in the order Keras lists the layers.

  Graph order of a Keras ResNet: per block conv1, bn1, relu, conv2, bn2, relu, the
  last main conv, then the shortcut conv, the last main BN, the shortcut BN, add,
  relu (the course's `Add()([x, shortcut])`); with `shortcut_first` (Keras
  Applications' `Add()([shortcut, x])`) each shortcut layer comes before the last
  main one instead. Names: Keras Applications' ('applications'), the Caffe-derived
  ones of the first Keras ResNet50 ('caffe': res2a_branch2a, bn2a_branch1, ...) or
  generated ('generated': conv2d, conv2d_1, ...), numbered in creation order (the
  main path before the shortcut, or after it with `shortcut_first`).
  """
  params, stats = variables['params'], variables['batch_stats']
  counters = {}

  def name(path, kind):
    if naming == 'generated':
      base = {'conv': 'conv2d', 'bn': 'batch_normalization', 'dense': 'dense'}[kind]
      n = counters[base] = counters.get(base, -1) + 1
      return base if n == 0 else f'{base}_{n}'
    if naming == 'caffe':
      if path[0] == 'head':
        return 'fc10'
      if path[0].startswith('stem'):
        return {'conv': 'conv1', 'bn': 'bn_conv1'}[kind]
      stage, block = path[0].removeprefix('stage').split('_block')
      branch = '1' if path[1].startswith('proj') else '2' + 'abc'[int(path[1][-1]) - 1]
      prefix = {'conv': 'res', 'bn': 'bn'}[kind]
      return f'{prefix}{int(stage) + 1}{"abcdefghi"[int(block) - 1]}_branch{branch}'
    if path[0] == 'head':
      return 'predictions'
    if path[0].startswith('stem'):
      return f'conv1_{kind}'
    stage, block = path[0].removeprefix('stage').split('_block')
    index = '0' if path[1].startswith('proj') else path[1][-1]
    return f'conv{int(stage) + 1}_block{block}_{index}_{kind}'

  def conv(*path):
    p = _get(params, path)
    return path, 'conv', [('kernel', p['kernel']), ('bias', p['bias'])]

  def bn(*path):
    p, s = _get(params, path), _get(stats, path)
    return path, 'bn', [('gamma', p['scale']), ('beta', p['bias']),
                        ('moving_mean', s['mean']), ('moving_variance', s['var'])]

  ordered = [('input_1', None), conv('stem_conv'), bn('stem_bn'), ('stem_relu', None)]
  for block in [k for k in params if k.startswith('stage')]:
    n = sum(k.startswith('conv') for k in params[block])
    for i in range(1, n):
      ordered += [conv(block, f'conv{i}'), bn(block, f'bn{i}'), (f'{block}_relu{i}', None)]
    for layer in (conv, bn):
      last = [layer(block, f'{layer.__name__}{n}')]
      if f'proj_{layer.__name__}' in params[block]:
        last.append(layer(block, f'proj_{layer.__name__}'))
      ordered += last[::-1] if shortcut_first else last
    ordered += [(f'{block}_add', None), (f'{block}_out', None)]
  head = params['head']
  ordered += [('avg_pool', None),
              (('head',), 'dense', [('kernel', head['kernel']), ('bias', head['bias'])])]
  # Creation order numbers the generated names.
  creation = sorted((e for e in ordered if len(e) == 3),
                    key=lambda e: (_block_key(e[0]),
                                   e[0][-1].startswith('proj') != shortcut_first))
  names = {e[0]: name(e[0], e[1]) for e in creation}
  return [(e[0], []) if len(e) == 2 else (names[e[0]], e[2]) for e in ordered]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _block_key(path):
  if path[0].startswith('stem'):
    return (0, 0)
  if path[0] == 'head':
    return (99, 0)
  stage, block = path[0].removeprefix('stage').split('_block')
  return (int(stage), int(block))


def write_h5(path, layers, *, full_model=False, chunks=1, keras2_names=True):
  """The Keras 2 layouts: weights only (root) or full model ('model_weights')."""
  with h5py.File(path, 'w') as f:
    group = f.create_group('model_weights') if full_model else f
    if full_model:
      f.attrs['model_config'] = b'{"class_name": "Functional"}'
    names = np.array([n.encode() for n, _ in layers])
    for i, chunk in enumerate(np.array_split(names, chunks)):
      group.attrs['layer_names' if chunks == 1 else f'layer_names{i}'] = chunk
    group.attrs['backend'] = b'tensorflow'
    for layer_name, weights in sorted(layers, key=lambda layer: layer[0]):
      layer_group = group.create_group(layer_name)
      suffix = ':0' if keras2_names else ''
      weight_names = [f'{layer_name}/{w}{suffix}' for w, _ in weights]
      layer_group.attrs['weight_names'] = np.array([w.encode() for w in weight_names],
                                                   dtype='S')
      for weight_name, (_, array) in zip(weight_names, weights):
        layer_group.create_dataset(weight_name, data=array)


def write_keras3(path, layers, *, names=False):
  """Keras 3's native .weights.h5: layers/<class>[_<n>]/vars/<i>, no weight names.

  Keys number each class in the order of `layers` (graph order), as Keras 3 does;
  with `names` each `vars` group holds the layer's name as attribute 'name', as
  Keras 3.15 writes it.
  """
  counters = {}
  with h5py.File(path, 'w') as f:
    for layer_name, weights in layers:
      if not weights:
        continue
      kind = {4: 'conv2d', 2: 'dense', 1: 'batch_normalization'}[weights[0][1].ndim]
      n = counters[kind] = counters.get(kind, -1) + 1
      group = f.create_group(f'layers/{kind if n == 0 else f"{kind}_{n}"}/vars')
      if names:
        group.attrs['name'] = layer_name
      for i, (_, array) in enumerate(weights):
        group.create_dataset(str(i), data=array)


def assert_same(ours, theirs):
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)


# --- round trips --------------------------------------------------------------


@pytest.mark.parametrize('naming', ['applications', 'caffe', 'generated'])
@pytest.mark.parametrize('full_model', [False, True])
def test_round_trip(tmp_path, model, variables, naming, full_model):
  path = tmp_path / 'w.h5'
  write_h5(path, keras_layers(variables, naming), full_model=full_model)
  assert read_keras_h5(path).layout == ('full_model' if full_model else 'weights_only')
  loaded = load_keras_h5(path, model)
  assert_same(loaded, variables)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(loaded))


def test_chunked_layer_names_and_keras3_weight_names(tmp_path, model, variables):
  """Keras splits long attributes into layer_names0, layer_names1, ...; Keras 3's
  legacy writer names weights without ':0'."""
  path = tmp_path / 'w.h5'
  write_h5(path, keras_layers(variables, 'generated'), chunks=3, keras2_names=False)
  assert_same(load_keras_h5(path, model), variables)


def test_keras3_native_layout_orders_generated_names_numerically(tmp_path, model,
                                                                 variables):
  # 22 convs: conv2d_10 must come after conv2d_9, not after conv2d_1.
  path = tmp_path / 'w.weights.h5'
  write_keras3(path, keras_layers(variables, 'generated'))
  weights = read_keras_h5(path)
  assert weights.layout == 'keras3_weights'
  convs = [n for n in weights.layers if n.startswith('conv2d')]
  assert convs[:3] == ['conv2d', 'conv2d_1', 'conv2d_2'] and convs[10] == 'conv2d_10'
  assert_same(load_keras_h5(path, model), variables)


@pytest.mark.parametrize('naming', ['applications', 'generated'])
@pytest.mark.parametrize('names', [True, False])
def test_keras3_native_layout_in_either_shortcut_order(tmp_path, model, variables, naming,
                                                       names):
  """Issue 15: Keras 3 numbers each class in graph order, which lists a block's
  shortcut before its last main layer for Keras Applications, after it for the
  course. Names stored in the file are used; without them the shapes pick the
  reading of the order."""
  for shortcut_first in (False, True):
    path = tmp_path / f'{shortcut_first}.weights.h5'
    write_keras3(path, keras_layers(variables, naming, shortcut_first), names=names)
    weights = read_keras_h5(path)
    if names and naming == 'applications':
      assert 'conv3_block1_0_conv' in weights.layers
    else:
      assert list(weights.layers)[:2] == ['batch_normalization', 'batch_normalization_1']
    assert_same(load_keras_h5(path, model), variables)


@pytest.mark.parametrize('full_model', [False, True])
def test_generated_names_with_shortcut_first_order(tmp_path, model, variables, full_model):
  path = tmp_path / 'w.h5'
  write_h5(path, keras_layers(variables, 'generated', shortcut_first=True),
           full_model=full_model)
  assert_same(load_keras_h5(path, model), variables)


def bottleneck_model_and_variables(stages):
  """A small keras-layout bottleneck ResNet, `stages` stages of one block, random
  variables; stage 1's conv3 and shortcut conv have one shape, as in ResNet-50."""
  model = ResNet(stage_sizes=(1,) * stages, widths=(8, 16)[:stages], stem_width=8,
                 layout='keras', num_classes=3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                             train=False))
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda s: rng.normal(0, 1, s.shape).astype(np.float32), shapes)
  # Moving variances are > 0 in a sound file (the importer refuses others as damage).
  variables['batch_stats'] = jax.tree.map(np.abs, variables['batch_stats'])
  return model, variables


@pytest.mark.parametrize('shortcut_first', [False, True])
def test_later_stage_decides_the_reading_of_the_first(tmp_path, shortcut_first):
  """Stage 2's shapes tell the two orders apart; the reading they fix holds for
  stage 1, where conv3 and the shortcut conv (and always the two BNs) agree in
  shape, so that those cannot be swapped."""
  model, variables = bottleneck_model_and_variables(2)
  block = variables['params']['stage1_block1']
  assert block['conv3']['kernel'].shape == block['proj_conv']['kernel'].shape
  path = tmp_path / 'w.weights.h5'
  write_keras3(path, keras_layers(variables, 'generated', shortcut_first))
  assert_same(load_keras_h5(path, model), variables)


@pytest.mark.parametrize('layout', ['keras3', 'legacy'])
def test_order_that_cannot_tell_shortcut_from_third_conv_is_refused(tmp_path, layout):
  model, variables = bottleneck_model_and_variables(1)
  path = tmp_path / ('w.weights.h5' if layout == 'keras3' else 'w.h5')
  (write_keras3 if layout == 'keras3' else write_h5)(
      path, keras_layers(variables, 'generated', shortcut_first=True))
  with pytest.raises(WeightsError) as error:
    load_keras_h5(path, model)
  for part in (str(path), 'stage1_block1/', 'could swap layers silently',
               'Keras Applications'):
    assert part in str(error.value)
  # The same weights under Keras Applications names load exactly.
  write_keras3(path, keras_layers(variables, 'applications', True), names=True)
  assert_same(load_keras_h5(path, model), variables)


def test_nested_model_is_split_into_its_layers(tmp_path, model, variables):
  """A Keras 2 base model inside a Sequential: one group, trainable weights first."""
  layers = [(n, w) for n, w in keras_layers(variables, 'applications') if w]
  backbone = [(n, w) for n, w in layers if n != 'predictions']
  trainable = [(f'{n}/{wn}:0', a) for n, ws in backbone for wn, a in ws
               if not wn.startswith('moving')]
  frozen = [(f'{n}/{wn}:0', a) for n, ws in backbone for wn, a in ws
            if wn.startswith('moving')]
  path = tmp_path / 'w.h5'
  with h5py.File(path, 'w') as f:
    group = f.create_group('model_weights')
    group.attrs['layer_names'] = np.array([b'resnet50', b'predictions'])
    inner = group.create_group('resnet50')
    inner.attrs['weight_names'] = np.array([n.encode() for n, _ in trainable + frozen])
    for n, a in trainable + frozen:
      inner.create_dataset(n, data=a)
    head = group.create_group('predictions')
    head.attrs['weight_names'] = np.array([b'predictions/kernel:0', b'predictions/bias:0'])
    for wn, a in dict(layers)['predictions']:
      head.create_dataset(f'predictions/{wn}:0', data=a)
  assert list(read_keras_h5(path).layers)[:2] == ['conv1_conv', 'conv1_bn']
  assert_same(load_keras_h5(path, model), variables)


# --- errors -------------------------------------------------------------------


def without(layers, name):
  return [(n, w) for n, w in layers if n != name]


def test_missing_layer_is_named(tmp_path, model, variables):
  path = tmp_path / 'w.h5'
  write_h5(path, without(keras_layers(variables, 'applications'), 'conv3_block2_2_bn'))
  with pytest.raises(WeightsError) as error:
    load_keras_h5(path, model)
  for part in ("no layer 'conv3_block2_2_bn'", 'stage2_block2/bn2', 'gamma (32,)',
               'found none', str(path)):
    assert part in str(error.value)


def test_extra_layer_is_named(tmp_path, model, variables):
  extra = ('extra_conv', [('kernel', np.zeros((3, 3, 64, 64), np.float32)),
                          ('bias', np.zeros(64, np.float32))])
  for naming in ('applications', 'generated'):
    path = tmp_path / f'{naming}.h5'
    write_h5(path, keras_layers(variables, naming) + [extra])
    with pytest.raises(WeightsError, match=r"'extra_conv' with weights \[kernel "
                       r"\(3, 3, 64, 64\), bias \(64,\)\] that fits no variable"):
      load_keras_h5(path, model)


def test_wrong_shape_is_named_with_both_shapes(tmp_path, model, variables):
  layers = keras_layers(variables, 'generated')
  i = next(i for i, (n, _) in enumerate(layers) if n == 'conv2d_5')
  layers[i] = ('conv2d_5', [('kernel', np.zeros((3, 3, 16, 17), np.float32)),
                            ('bias', np.zeros(17, np.float32))])
  path = tmp_path / 'w.h5'
  write_h5(path, layers)
  with pytest.raises(WeightsError) as error:
    load_keras_h5(path, model)
  for part in ("'conv2d_5'", 'Conv2D number 6 in graph order', 'stage1_block3/conv1',
               'expected weights [kernel (3, 3, 16, 16), bias (16,)]',
               'found [kernel (3, 3, 16, 17), bias (17,)]', str(path)):
    assert part in str(error.value)


def test_generated_names_count_mismatch(tmp_path, model, variables):
  layers = keras_layers(variables, 'generated')
  last_bn = [n for n, _ in layers if n.startswith('batch_normalization')][-1]
  path = tmp_path / 'w.h5'
  write_h5(path, without(layers, last_bn))
  with pytest.raises(WeightsError, match=r"no layer for the model's stage3_block3/bn2.*"
                     r'file has 20 BatchNormalization layers, the model 21'):
    load_keras_h5(path, model)


def test_other_architecture_is_an_error(tmp_path, variables):
  path = tmp_path / 'w.h5'
  write_h5(path, keras_layers(variables, 'applications'))
  deeper = create_model('cifar_resnet32', layout='keras', shortcut='projection')
  with pytest.raises(WeightsError, match=r"no layer 'conv2_block4_1_conv' for the "
                     r"model's stage1_block4/conv1"):
    load_keras_h5(path, deeper)


def test_layer_of_unknown_kind_is_named(tmp_path, model, variables):
  conv1d = ('conv1d', [('kernel', np.zeros((3, 16, 16), np.float32)),
                       ('bias', np.zeros(16, np.float32))])
  path = tmp_path / 'w.h5'
  write_h5(path, keras_layers(variables, 'generated') + [conv1d])
  with pytest.raises(WeightsError, match=r"'conv1d' with weights of shapes "
                     r'\[\(3, 16, 16\), \(16,\)\]: not a Conv2D'):
    load_keras_h5(path, model)


def test_unreadable_files_are_named(tmp_path, model):
  with pytest.raises(WeightsError, match='missing.h5 does not exist'):
    load_keras_h5(tmp_path / 'missing.h5', model)
  text = tmp_path / 'text.h5'
  text.write_text('not hdf5')
  with pytest.raises(WeightsError, match='text.h5 is not an HDF5 file'):
    load_keras_h5(text, model)
  other = tmp_path / 'other.h5'
  with h5py.File(other, 'w') as f:
    f.create_dataset('images', data=np.zeros(3))
  with pytest.raises(WeightsError, match=r"other.h5 has root keys \['images'\].*expected "
                     'a Keras weights file'):
    load_keras_h5(other, model)


# --- checkpoints and the converter ------------------------------------------


def test_checkpoint_round_trip_and_refusals(tmp_path, model, variables):
  out = tmp_path / 'ckpt'
  save_variables(out, variables)
  assert_same(restore_variables(out, template=variables), variables)
  with pytest.raises(CheckpointError, match='already exists'):
    save_variables(out, variables)
  other = jax.eval_shape(lambda: create_model('cifar_resnet20', layout='keras').init(
      jax.random.key(0), np.zeros((1, 32, 32, 3)), train=False))
  with pytest.raises(CheckpointError, match=r"'batch_stats/stage2_block1' are "
                     r"\['bn1', 'bn2', 'proj_bn'\]; the model expects \['bn1', 'bn2'\]"):
    restore_variables(out, template=other)


def run_converter(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'convert_keras.py'),
                         *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=300)


@pytest.fixture(scope='module')
def plain_cifar_variables():
  """Random variables of the converter's cifar_resnet20 (zero-padding shortcuts)."""
  model = create_model('cifar_resnet20', layout='keras')
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                             train=False))
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


@pytest.mark.slow  # Subprocess runs of experiments/convert_keras.py.
def test_converter_writes_a_checkpoint_and_never_overwrites(tmp_path,
                                                             plain_cifar_variables):
  h5 = tmp_path / 'w.h5'
  write_h5(h5, keras_layers(plain_cifar_variables, 'applications'), full_model=True)
  out = tmp_path / 'converted'
  args = [h5, '--model', 'cifar_resnet20', '--layout', 'keras', '--out', out]
  result = run_converter(*args)
  assert result.returncode == 0, result.stderr
  assert 'head of 10 classes from the file' in result.stdout
  assert_same(restore_variables(out), plain_cifar_variables)
  before = sorted(os.listdir(out))
  again = run_converter(*args)
  assert again.returncode == 2 and 'already exists' in again.stderr
  assert sorted(os.listdir(out)) == before


@pytest.mark.slow  # Converts and initialises two ResNets.
def test_convert_with_new_head_and_mismatch(tmp_path, variables, plain_cifar_variables):
  h5 = tmp_path / 'w.h5'
  write_h5(h5, keras_layers(plain_cifar_variables, 'applications'))
  done = convert_keras_h5(h5, tmp_path / 'six', model_name='cifar_resnet20',
                          num_classes=6, image_size=32)
  assert (done.fresh_head, done.file_classes, done.num_classes) == (True, 10, 6)
  restored = restore_variables(done.checkpoint)
  assert restored['params']['head']['kernel'].shape == (64, 6)
  assert_same({k: v for k, v in restored['params'].items() if k != 'head'},
              {k: v for k, v in plain_cifar_variables['params'].items() if k != 'head'})
  assert_same(restored['batch_stats'], plain_cifar_variables['batch_stats'])
  # A file with projection shortcuts does not fit the zero-padding model.
  projected = tmp_path / 'projected.h5'
  write_h5(projected, keras_layers(variables, 'applications'))
  with pytest.raises(WeightsError, match=r"'conv3_block1_0_conv'.*fits no variable"):
    convert_keras_h5(projected, tmp_path / 'no', model_name='cifar_resnet20')
  assert not (tmp_path / 'no').exists()


# --- ResNetV2 (pre-activation) under Keras Applications' names ------------------------


@pytest.fixture(scope='module')
def v2_model():
  return ResNet(stage_sizes=(2, 2), widths=(4, 8), num_classes=5, design='full_preact',
                layout='keras')


@pytest.fixture(scope='module')
def v2_variables(v2_model):
  shapes = jax.eval_shape(lambda: v2_model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                                train=False))
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


def keras_v2_layers(variables):
  """[(Keras Applications ResNetV2 name, [(weight name, array)])], in ResNetV2's order."""
  params, stats = variables['params'], variables['batch_stats']

  def conv(name, p):
    return name, [('kernel', p['kernel'])] + ([('bias', p['bias'])] if 'bias' in p else [])

  def bn(name, p, s):
    return name, [('gamma', p['scale']), ('beta', p['bias']), ('moving_mean', s['mean']),
                  ('moving_variance', s['var'])]

  layers = [('input_layer', []), conv('conv1_conv', params['stem_conv'])]
  for block in sorted(k for k in params if k.startswith('stage')):
    stage, number = block.removeprefix('stage').split('_block')
    prefix, p, s = f'conv{int(stage) + 1}_block{number}', params[block], stats[block]
    layers.append(bn(f'{prefix}_preact_bn', p['preact_bn'], s['preact_bn']))
    if 'proj_conv' in p:
      layers.append(conv(f'{prefix}_0_conv', p['proj_conv']))
    for i in (1, 2):
      layers += [conv(f'{prefix}_{i}_conv', p[f'conv{i}']),
                 bn(f'{prefix}_{i}_bn', p[f'bn{i}'], s[f'bn{i}'])]
    layers.append(conv(f'{prefix}_3_conv', p['conv3']))
  layers.append(bn('post_bn', params['post_bn'], stats['post_bn']))
  head = params['head']
  return layers + [('predictions', [('kernel', head['kernel']), ('bias', head['bias'])])]


@pytest.mark.parametrize('full_model', [False, True])
def test_resnetv2_round_trip(tmp_path, v2_model, v2_variables, full_model):
  path = tmp_path / 'v2.h5'
  write_h5(path, keras_v2_layers(v2_variables), full_model=full_model)
  assert_same(load_keras_h5(path, v2_model), v2_variables)


def test_resnetv2_notop_and_missing_preact_bn(tmp_path, v2_model, v2_variables):
  layers = keras_v2_layers(v2_variables)
  write_h5(tmp_path / 'notop.h5', layers[:-1])
  assert_same(load_keras_h5(tmp_path / 'notop.h5', v2_model, init_variables=v2_variables),
              v2_variables)
  write_h5(tmp_path / 'broken.h5', [layer for layer in layers
                                    if layer[0] != 'conv3_block2_preact_bn'])
  with pytest.raises(WeightsError, match="no layer 'conv3_block2_preact_bn'.*stage2_block2"):
    load_keras_h5(tmp_path / 'broken.h5', v2_model)
