"""experiments/evaluate.py: a run's accuracy on a SIGNS-format test file, or on fresh pictures."""
import json

import jax
import numpy as np
import pytest

import helpers
from experiments import evaluate
from resnet_jax.data import load_signs, make_synthetic_signs
from resnet_jax.train import checkpoint as checkpoint_lib, optim, setup
from resnet_jax.train.inference import load_predictor
from resnet_jax.train.state import create_train_state, state_to_host
from resnet_jax.train.workdir import prepare_workdir, save_config

# A ResNet checkpoint evaluated on generated pictures: outside the fast loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def signs_run(tmp_path_factory):
  """A workdir holding an (untrained) 6-class 64x64 CIFAR ResNet-20's checkpoint."""
  workdir = tmp_path_factory.mktemp('evaluate')
  config = helpers.tiny_config(model='cifar_resnet20', layout='torchvision', num_classes=6,
                          image_size=64)
  prepare_workdir(str(workdir), config)
  save_config(str(workdir), config)
  model = setup.build_model(config)
  tx, _ = optim.create_optimizer(config, steps_per_epoch=8)
  state = jax.tree.map(np.asarray, create_train_state(model, tx, (64, 64, 3), seed=0))
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=1)
  checkpointer.save(3, state_to_host(state), {'class_names': list('012345')}, eval_accuracy=0.5)
  checkpointer.wait()
  checkpointer.close()
  return workdir


def test_accuracy_on_a_signs_directory_is_counted_by_hand(signs_run, tmp_path, capsys):
  make_synthetic_signs(str(tmp_path), num_train=6, num_test=18, seed=5)
  code = evaluate.main([f'--workdir={signs_run}', f'--data_dir={tmp_path}', '--batch_size=7'])
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  result = json.loads(out.strip().splitlines()[-1])
  test = load_signs(str(tmp_path)).test
  predicted = np.argmax(load_predictor(str(signs_run), 'latest').probabilities(test.images), -1)
  assert result['count'] == 18 and result['step'] == 3
  assert result['accuracy'] == pytest.approx(np.mean(predicted == test.labels))


def test_missing_files_and_the_training_seed_are_refused(signs_run, tmp_path, capsys):
  code = evaluate.main([f'--workdir={signs_run}', f'--data_dir={tmp_path / "nowhere"}'])
  err = capsys.readouterr().err
  assert code == 2 and 'nowhere' in err and 'Traceback' not in err
  assert err.startswith('error: DatasetError: ') and err.count('\n') == 1, err
  code = evaluate.main([f'--workdir={signs_run}', '--synthetic_seed=0'])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith('error: UsageError: ') and 'training set' in err
