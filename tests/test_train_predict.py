"""predict: a workdir's config and best checkpoint give class probabilities for image files."""
import jax
import numpy as np
import pytest
from PIL import Image

import helpers
from experiments import predict
from resnet_jax.data import augment
from resnet_jax.errors import CheckpointError, ConfigError
from resnet_jax.train import checkpoint as checkpoint_lib, optim, setup
from resnet_jax.train.inference import load_predictor
from resnet_jax.train.state import create_train_state, state_to_host
from resnet_jax.train.workdir import prepare_workdir, save_config

# ResNet checkpoints and compiled predictions: outside the fast loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir as a run of a zoo model (CIFAR ResNet-20, which takes 8x8 inputs) leaves it:
  config.json, and checkpoints at step 2 (eval accuracy 0.9) and 4 (0.5). The states are
  initial ones with the head perturbed, to save compiling a training step."""
  workdir = tmp_path_factory.mktemp('predict')
  config = helpers.tiny_config(model='cifar_resnet20', layout='torchvision',
                               preprocess='standardize')
  prepare_workdir(str(workdir), config)
  save_config(str(workdir), config)
  model = setup.build_model(config)
  tx, _ = optim.create_optimizer(config, steps_per_epoch=8)
  state = jax.tree.map(np.asarray, create_train_state(model, tx, (8, 8, 3), seed=0))
  mean, std = augment.channel_stats(helpers.make_split(64, 0).images)
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=1)
  for step, accuracy in ((2, 0.9), (4, 0.5)):
    head = jax.tree.map(lambda x, s=step: x + s * 0.1, state.params['head'])
    params = dict(state.params, head=head)
    checkpointer.save(step, state_to_host(state.replace(params=params)),
                      {'preprocess_mean': mean, 'preprocess_std': std,
                       'class_names': ['a', 'b', 'c']}, eval_accuracy=accuracy)
  checkpointer.wait()
  checkpointer.close()
  return workdir


def test_probabilities_come_from_the_best_checkpoint_with_training_preprocessing(trained):
  predictor = load_predictor(str(trained))
  assert predictor.step == 2 and predictor.class_names == ('a', 'b', 'c')
  assert predictor.mean is not None  # standardize: the train split's statistics came along.
  images = helpers.make_split(5, 3).images
  probs = predictor.probabilities(images)
  assert probs.shape == (5, 3)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  # The same numbers by hand: standardise, apply in eval mode, softmax.
  x = (images / 255.0 - np.asarray(predictor.mean)) / np.asarray(predictor.std)
  logits = predictor.model.apply(predictor.variables, x.astype(np.float32), train=False)
  np.testing.assert_allclose(probs, jax.nn.softmax(logits), rtol=1e-4, atol=1e-6)


def test_latest_checkpoint_on_request(trained):
  predictor = load_predictor(str(trained), 'latest')
  assert predictor.step == 4
  np.testing.assert_allclose(
      predictor.variables['params']['head']['bias'],
      load_predictor(str(trained)).variables['params']['head']['bias'] + 0.2, rtol=1e-6)


def test_workdir_without_a_run_is_refused(tmp_path):
  with pytest.raises(ConfigError, match='config.json'):
    load_predictor(str(tmp_path))


def test_workdir_without_checkpoints_is_refused(trained, tmp_path):
  (tmp_path / 'config.json').write_text((trained / 'config.json').read_text())
  with pytest.raises(CheckpointError, match='no checkpoint'):
    load_predictor(str(tmp_path))


def test_cli_prints_one_line_per_image(trained, tmp_path, capsys):
  paths = []
  for i, image in enumerate(helpers.make_split(2, 4, size=20).images):  # Resized to 8x8.
    path = tmp_path / f'hand{i}.png'
    Image.fromarray(image).save(path)
    paths.append(str(path))
  bad = tmp_path / 'notes.png'
  bad.write_text('not an image')
  code = predict.main([f'--workdir={trained}', *paths])
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  lines = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
  assert len(lines) == 2 and all(' class ' in line and 'a:' in line for line in lines)
  code = predict.main([f'--workdir={trained}', str(bad)])
  err = capsys.readouterr().err
  assert code == 2 and 'notes.png' in err and 'Traceback' not in err
  assert err.startswith('error: DatasetError: ') and err.count('\n') == 1, err
