"""experiments/convert_keras.py: the README's command on a notop file, errors that name the
flag that fixes them, and damaged files refused in one line."""
import os

import pytest
from test_bad_input import write_keras_weights_without
from test_weights_validation import DAMAGE, damaged_layers, expected_message, random_variables

from experiments import convert_keras
from resnet_jax import models
from resnet_jax.weights.checkpoint import restore_variables
from test_weights_import import write_h5


def _notop_file(tmp_path):
  """A Keras 2 weights file of a CIFAR ResNet-20 without its classifier, as `_notop` files."""
  return write_keras_weights_without(tmp_path / 'notop.h5', models.create_model('cifar_resnet20'),
                                     'predictions')


@pytest.mark.slow  # Converts and initialises a ResNet.
def test_a_notop_file_needs_num_classes_and_the_error_names_the_flag(tmp_path, capsys):
  notop = _notop_file(tmp_path)
  argv = [notop, '--model=cifar_resnet20', '--layout', 'torchvision', '--out',
          str(tmp_path / 'out')]
  assert convert_keras.main(argv) == 2
  out, err = capsys.readouterr()
  assert err.startswith('error: WeightsError: ') and err.count('\n') == 1, err
  assert 'notop' in err and 'give --num_classes' in err
  assert not (tmp_path / 'out').exists()

  assert convert_keras.main(argv + ['--num_classes', '6', '--image_size=32']) == 0, (
      capsys.readouterr().err)
  assert 'new head of 6 classes' in capsys.readouterr().out
  restored = restore_variables(str(tmp_path / 'out'))
  assert restored['params']['head']['kernel'].shape == (64, 6)


def test_an_existing_out_names_the_flag(tmp_path, capsys):
  (tmp_path / 'out').mkdir()
  assert convert_keras.main([_notop_file(tmp_path), '--num_classes=6',
                             f'--out={tmp_path / "out"}']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: CheckpointError: --out ') and 'already exists' in err, err
  assert os.listdir(tmp_path / 'out') == []


@pytest.mark.parametrize('case', DAMAGE)
def test_a_damaged_file_is_one_line_and_writes_nothing(tmp_path, capsys, case):
  """A NaN, an infinity or a BN moving variance <= 0: refused by name before --out exists."""
  model = models.create_model('cifar_resnet20', layout='keras', num_classes=10)
  path = str(tmp_path / 'damaged.h5')
  write_h5(path, damaged_layers(random_variables(model), case))
  out = tmp_path / 'out'
  assert convert_keras.main([path, '--model=cifar_resnet20', '--layout=keras',
                             f'--out={out}']) == 2
  captured = capsys.readouterr()
  assert captured.err == f'error: WeightsError: {expected_message(path, case)}\n'
  assert captured.out == ''
  assert not out.exists() and os.listdir(tmp_path) == ['damaged.h5']
