"""Damaged pretrained weights are refused on import: a NaN or infinity anywhere, or a BatchNorm
moving variance <= 0, is a WeightsError naming the file, the layer, the weight and the model's
variable, on every route by which weights enter a model (load_keras_h5, a converted
checkpoint, a run's config.finetune.init_from through experiments/train.py).

The files are a CIFAR ResNet-20 (Keras layout, 10 classes) with random values written in the
Keras h5 layouts by test_weights_import's writers, then damaged at one value.
"""
import os

import jax
import numpy as np
import pytest

import _fault_helpers as fh
from experiments import train as train_script
from resnet_jax import weights
from resnet_jax.errors import WeightsError
from resnet_jax.models import create_model
from resnet_jax.weights import load_keras_h5, restore_variables, save_variables
from resnet_jax.weights.validate import EXPECTED_FINITE, EXPECTED_VARIANCE
from test_weights_import import keras_layers, write_h5, write_keras3

# name -> (Keras layer, weight, index, value, the model's variable, what the message says)
DAMAGE = {
    'NaN in a conv kernel': ('conv1_conv', 'kernel', (0, 1, 2, 3), np.nan,
                             'params/stem_conv/kernel',
                             '1 NaN of 432 values (the first at index (0, 1, 2, 3))'),
    'inf in a BN gamma': ('conv2_block1_1_bn', 'gamma', 2, np.inf,
                          'params/stage1_block1/bn1/scale',
                          '1 +inf of 16 values (the first at index 2)'),
    'negative moving variance': ('conv1_bn', 'moving_variance', 3, -0.5,
                                 'batch_stats/stem_bn/var',
                                 '1 of 16 values <= 0 (min -0.5 at index 3)'),
    'zero moving variance': ('conv4_block3_2_bn', 'moving_variance', 0, 0.0,
                             'batch_stats/stage3_block3/bn2/var',
                             '1 of 64 values <= 0 (min 0 at index 0)'),
}
POSITION = {'kernel': 0, 'gamma': 0, 'moving_variance': 3}  # In Keras's order of the weights.


@pytest.fixture(scope='module')
def model():
  return create_model('cifar_resnet20', layout='keras', num_classes=10)


@pytest.fixture(scope='module')
def variables(model):
  return random_variables(model)


def random_variables(model):
  """Random values of the model's shapes: params around 0, BN statistics in [0.2, 1.5]."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 8, 8, 3)),
                                             train=False))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32),
                        shapes['params'])
  stats = jax.tree.map(lambda s: rng.uniform(0.2, 1.5, s.shape).astype(np.float32),
                       shapes['batch_stats'])
  return {'params': params, 'batch_stats': stats}


def damaged_layers(variables, case):
  """keras_layers(variables) (Keras Applications names) with one value of DAMAGE[case]."""
  layer_name, weight, index, value = DAMAGE[case][:4]
  layers = []
  for name, layer_weights in keras_layers(variables, 'applications'):
    if name == layer_name:
      layer_weights = [(w, a.copy()) for w, a in layer_weights]
      dict(layer_weights)[weight][index] = value
    layers.append((name, layer_weights))
  return layers


def expected_message(path, case, weight=None):
  layer_name, keras_weight, _, _, ours, found = DAMAGE[case]
  expected = EXPECTED_VARIANCE if 'variance' in case else EXPECTED_FINITE
  return (f"{path}: layer '{layer_name}' weight '{weight or keras_weight}' (the model's "
          f'{ours}) holds {found}; {expected}')


@pytest.mark.parametrize('case', DAMAGE)
@pytest.mark.parametrize('layout', ['weights_only', 'full_model', 'keras3'])
def test_load_keras_h5_refuses_damaged_values(tmp_path, model, variables, case, layout):
  path = str(tmp_path / ('w.weights.h5' if layout == 'keras3' else 'w.h5'))
  if layout == 'keras3':  # No weight names in the file: the message gives the position.
    write_keras3(path, damaged_layers(variables, case), names=True)
    keras_weight = DAMAGE[case][1]
    weight = f'{keras_weight}, vars/{POSITION[keras_weight]} in the file'
  else:
    write_h5(path, damaged_layers(variables, case), full_model=layout == 'full_model')
    weight = None
  with pytest.raises(WeightsError) as info:
    load_keras_h5(path, model)
  assert str(info.value) == expected_message(path, case, weight)
  assert '\n' not in str(info.value)


def test_a_skipped_classifier_is_checked_too(tmp_path, model, variables):
  layers = [(name, [(w, a.copy()) for w, a in layer_weights])
            for name, layer_weights in keras_layers(variables, 'applications')]
  dict(dict(layers)['predictions'])['bias'][[1, 4]] = [-np.inf, np.nan]
  path = str(tmp_path / 'w.h5')
  write_h5(path, layers)
  with pytest.raises(WeightsError) as info:
    load_keras_h5(path, model, init_variables=variables, skip_head=True)
  assert str(info.value) == (
      f"{path}: layer 'predictions' weight 'bias' holds 1 NaN, 1 -inf of 10 values (the first "
      f'at index 1); {EXPECTED_FINITE}')


def test_legitimate_extremes_load_exactly(tmp_path, model, variables):
  """Zero gammas (zero-initialised residual branches), zero biases and means, tiny and huge
  variances are sound weights."""
  sound = jax.tree.map(np.copy, variables)
  sound['params']['stage1_block1']['bn2']['scale'][:] = 0
  sound['params']['stem_conv']['bias'][:] = 0
  sound['params']['head']['bias'][:] = 0
  sound['batch_stats']['stem_bn']['mean'][:] = 0
  sound['batch_stats']['stem_bn']['var'][:3] = [1e-30, np.finfo(np.float32).tiny, 3e38]
  path = tmp_path / 'w.h5'
  write_h5(path, keras_layers(sound, 'applications'))
  loaded = load_keras_h5(path, model)
  jax.tree.map(np.testing.assert_array_equal, loaded, sound)
  directory = save_variables(tmp_path / 'ckpt', loaded)
  jax.tree.map(np.testing.assert_array_equal, restore_variables(directory), sound)


@pytest.mark.parametrize('where, index, value, found', [
    ('params/stem_conv/kernel', (0, 1, 2, 3), np.nan,
     '1 NaN of 432 values (the first at index (0, 1, 2, 3))'),
    ('params/stage1_block1/bn1/scale', 2, np.inf, '1 +inf of 16 values (the first at index 2)'),
    ('batch_stats/stem_bn/var', 3, -0.5, '1 of 16 values <= 0 (min -0.5 at index 3)'),
    ('batch_stats/stage3_block3/bn2/var', 0, 0.0, '1 of 64 values <= 0 (min 0 at index 0)'),
])
def test_a_converted_checkpoint_with_damaged_values_is_refused(tmp_path, model, variables,
                                                               where, index, value, found):
  """restore_variables, and a run's init_from naming the directory, which goes through it."""
  damaged = jax.tree.map(np.copy, variables)
  leaf = damaged
  for key in where.split('/'):
    leaf = leaf[key]
  leaf[index] = value
  directory = save_variables(tmp_path / 'ckpt', damaged)
  expected = EXPECTED_VARIANCE if where.endswith('/var') else EXPECTED_FINITE
  message = f'{directory}: variable {where} holds {found}; {expected}'
  with pytest.raises(WeightsError) as info:
    restore_variables(directory)
  assert str(info.value) == message
  finetune = type('Finetune', (), {'init_from': directory})()
  with pytest.raises(WeightsError) as info:
    weights.initial_variables(finetune, model, variables)
  assert str(info.value) == message


@pytest.mark.slow  # train.py's main, once per kind of damage.
@pytest.mark.parametrize('case', DAMAGE)
def test_train_with_init_from_a_damaged_file_is_one_line_and_leaves_no_workdir(
    tmp_path, variables, case, capsys):
  """tiny_test.py's network in the Keras layout, from a 10-class file (its head is replaced
  by a fresh 1000-class one): the damaged value is refused before the workdir is kept."""
  path = str(tmp_path / 'damaged.h5')
  write_h5(path, damaged_layers(variables, case))
  workdir = tmp_path / 'run'
  code = train_script.main([f'--config={fh.TINY_CONFIG}', f'--workdir={workdir}',
                            '--config.model.layout=keras',
                            f'--config.finetune.init_from={path}'])
  err = capsys.readouterr().err
  assert code == 2, err
  errors = [line for line in err.splitlines() if line.startswith('error:')]
  assert errors == [f'error: WeightsError: {expected_message(path, case)}'], err
  assert 'Traceback' not in err and 'learning_rate' not in err
  assert not os.path.exists(workdir)
