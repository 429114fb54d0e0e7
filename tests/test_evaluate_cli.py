"""experiments/evaluate.py: a run's accuracy on its own evaluation split (--workdir alone), a
SIGNS-format test file, or fresh pictures."""
import glob
import json
import os

import _image_data
import jax
import numpy as np
import pytest
from test_bad_input import write_signs

import helpers
from experiments import evaluate
from resnet_jax.data import image_records, load_signs, make_synthetic_signs
from resnet_jax.errors import ConfigError
from resnet_jax.train import checkpoint as checkpoint_lib, setup
from resnet_jax.train.inference import load_predictor
from resnet_jax.train.state import create_train_state, state_to_host
from resnet_jax.train.workdir import prepare_workdir, save_config

# A ResNet checkpoint evaluated on generated pictures: outside the fast loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


def write_run(workdir, image_size=64, num_classes=6, steps=(3,), dataset='signs'):
  """A workdir holding an (untrained) CIFAR ResNet-20's checkpoints at `steps`."""
  config = helpers.tiny_config(**{'model.name': 'cifar_resnet20', 'model.layout': 'torchvision',
                                  'model.num_classes': num_classes, 'data.image_size': image_size,
                                  'data.name': dataset})
  prepare_workdir(str(workdir), config)
  save_config(str(workdir), config)
  model = setup.build_model(config)
  tx, _ = helpers.create_optimizer(config, steps_per_epoch=8)
  state = jax.tree.map(np.asarray, create_train_state(model, tx, (image_size, image_size, 3),
                                                      seed=0))
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=len(steps))
  for step in steps:
    checkpointer.save(step, state_to_host(state),
                      {'class_names': [str(c) for c in range(num_classes)]}, eval_accuracy=0.5)
    checkpointer.wait()
  checkpointer.close()
  return workdir


@pytest.fixture(scope='module')
def signs_run(tmp_path_factory):
  """A workdir holding an (untrained) 6-class 64x64 CIFAR ResNet-20's checkpoint."""
  return write_run(tmp_path_factory.mktemp('evaluate'))


def test_accuracy_on_a_signs_directory_is_counted_by_hand(signs_run, tmp_path, capsys):
  make_synthetic_signs(str(tmp_path), num_train=6, num_test=18, seed=5)
  code = evaluate.main([f'--workdir={signs_run}', f'--data_dir={tmp_path}', '--batch_size=7'])
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  result = json.loads(out.strip().splitlines()[-1])
  test = load_signs(str(tmp_path)).test
  predicted = np.argmax(load_predictor(str(signs_run), 'best').probabilities(test.images), -1)
  assert result['count'] == 18 and result['step'] == 3 and result['split'] == 'test'
  assert result['accuracy'] == pytest.approx(np.mean(predicted == test.labels))


def test_missing_files_and_the_training_seed_are_refused(signs_run, tmp_path, capsys):
  code = evaluate.main([f'--workdir={signs_run}', f'--data_dir={tmp_path / "nowhere"}'])
  err = capsys.readouterr().err
  assert code == 2 and 'nowhere' in err and 'Traceback' not in err
  assert err.startswith('error: DatasetError: ') and err.count('\n') == 1, err
  code = evaluate.main([f'--workdir={signs_run}', '--synthetic_seed=0'])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith('error: UsageError: ') and 'training set' in err


def _one_error_line(capsys, error_type, *fragments):
  out, err = capsys.readouterr()
  assert err.startswith(f'error: {error_type}: ') and err.count('\n') == 1, err
  assert out == '' and all(f in err for f in fragments), err


def test_data_that_does_not_fit_the_model_is_refused_naming_both(signs_run, tmp_path, capsys):
  ten = write_signs(tmp_path / 'ten', classes=tuple(range(10)))
  assert evaluate.main([f'--workdir={signs_run}', f'--data_dir={ten}']) == 2
  _one_error_line(capsys, 'DatasetError', f'{ten}/test_signs.h5 has 10 classes',
                  'predicts 6', str(signs_run))
  small = write_run(tmp_path / 'small', image_size=8)
  six = write_signs(tmp_path / 'six')
  assert evaluate.main([f'--workdir={small}', f'--data_dir={six}']) == 2
  _one_error_line(capsys, 'DatasetError', '(64, 64, 3)', '(8, 8, 3)', str(small))


def test_a_test_file_alone_is_enough(signs_run, tmp_path, capsys):
  directory = write_signs(tmp_path / 'signs', num_test=9)
  os.remove(os.path.join(directory, 'train_signs.h5'))
  code = evaluate.main([f'--workdir={signs_run}', f'--data_dir={directory}'])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert json.loads(out.strip().splitlines()[-1])['count'] == 9
  test_file = os.path.join(directory, 'test_signs.h5')
  assert evaluate.main([f'--workdir={signs_run}', f'--data_dir={test_file}']) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['count'] == 9


def test_batch_size_zero_is_one_error_line(signs_run, tmp_path, capsys):
  directory = write_signs(tmp_path / 'signs')
  assert evaluate.main([f'--workdir={signs_run}', f'--data_dir={directory}',
                        '--batch_size=0']) == 2
  _one_error_line(capsys, 'IllegalFlagValueError', '--batch_size=0')


def test_a_fallback_to_an_older_checkpoint_is_said_in_one_line(tmp_path, capsys):
  workdir = write_run(tmp_path / 'run', steps=(2, 3))
  latest = workdir / 'checkpoints' / '3'
  for path in glob.glob(str(latest / 'state' / '**' / 'd' / '*'), recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  directory = write_signs(tmp_path / 'signs')
  code = evaluate.main([f'--workdir={workdir}', f'--data_dir={directory}', '--checkpoint=latest'])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert json.loads(out.strip().splitlines()[-1])['step'] == 2
  lines = err.splitlines()
  assert len(lines) == 1 and lines[0].startswith('WARNING ') and str(latest) in lines[0], err
  assert 'using step 2' in lines[0] and 'Traceback' not in err


def test_the_workdir_alone_scores_any_run_on_its_own_evaluation_split(tmp_path, capsys):
  from resnet_jax.data import load_dataset
  workdir = write_run(tmp_path / 'digits', image_size=32, num_classes=10, dataset='digits')
  code = evaluate.main([f'--workdir={workdir}'])
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  result = json.loads(out.strip().splitlines()[-1])
  test = load_dataset('digits', image_size=32).test
  assert result['count'] == len(test) and result['split'] == 'test'
  assert 'digits' in result['data'] and 'top5_accuracy' in result
  assert evaluate.main([f'--workdir={workdir}', '--synthetic_seed=3']) == 2
  _one_error_line(capsys, 'UsageError', 'SIGNS runs', "'digits'")


def test_evaluate_and_predict_share_one_default_checkpoint():
  from experiments import cli, predict
  assert evaluate._WHICH.default == predict._WHICH.default == cli.DEFAULT_CHECKPOINT


def test_an_images_run_is_scored_on_its_val_shards_without_the_train_shards(tmp_path, capsys):
  data = _image_data.make_shards(str(tmp_path / 'data'), 12, 9)
  config = helpers.tiny_config(**{
      'model.name': 'cifar_resnet20', 'model.layout': 'torchvision', 'model.num_classes': 3,
      'data.image_size': 8, 'data.name': 'images', 'data.data_dir': data})
  workdir = str(tmp_path / 'run')
  prepare_workdir(workdir, config)
  save_config(workdir, config)
  tx, _ = helpers.create_optimizer(config, steps_per_epoch=2)
  state = jax.tree.map(np.asarray, create_train_state(setup.build_model(config), tx, (8, 8, 3),
                                                      seed=0))
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=1)
  checkpointer.save(2, state_to_host(state), {'class_names': list(_image_data.CLASSES)},
                    eval_accuracy=0.5)
  checkpointer.wait()
  checkpointer.close()
  for shard in image_records.read_index(data).splits['train'].shards:
    os.remove(os.path.join(data, shard))  # Evaluation reads only the val split.
  code = evaluate.main([f'--workdir={workdir}'])
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  result = json.loads(out.strip().splitlines()[-1])
  assert result['count'] == 9 and result['split'] == 'val' and data in result['data']
  # Opened for evaluation, the train split is empty: nothing can train on it.
  dataset = setup.load_data(config.data, eval_only=True)
  assert len(dataset.train) == 0 and len(dataset.test) == 9
  with pytest.raises(ConfigError, match='the train split is empty'):
    setup.check_data_fits(config, dataset)
