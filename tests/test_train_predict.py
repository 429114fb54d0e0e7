"""predict: a workdir's config and best checkpoint give class probabilities for image files."""
import re

import jax
import numpy as np
import pytest
from PIL import Image

import helpers
from experiments import predict
from resnet_jax.data.channel_stats import channel_stats
from resnet_jax.errors import CheckpointError, ConfigError
from resnet_jax.train import checkpoint as checkpoint_lib, setup
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
  return write_trained(tmp_path_factory.mktemp('predict'))


def write_trained(workdir, **meta):
  """The `trained` fixture's workdir, with `meta` added to each checkpoint's meta."""
  config = helpers.tiny_config(**{'model.name': 'cifar_resnet20', 'model.layout': 'torchvision',
                                  'data.preprocess': 'standardize'})
  prepare_workdir(str(workdir), config)
  save_config(str(workdir), config)
  model = setup.build_model(config)
  tx, _ = helpers.create_optimizer(config, steps_per_epoch=8)
  state = jax.tree.map(np.asarray, create_train_state(model, tx, (8, 8, 3), seed=0))
  mean, std = channel_stats(helpers.make_split(64, 0))
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=1)
  for step, accuracy in ((2, 0.9), (4, 0.5)):
    head = jax.tree.map(lambda x, s=step: x + s * 0.1, state.params['head'])
    params = dict(state.params, head=head)
    checkpointer.save(step, state_to_host(state.replace(params=params)),
                      {'preprocess_mean': mean, 'preprocess_std': std,
                       'class_names': ['a', 'b', 'c'], **meta}, eval_accuracy=accuracy)
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
  assert err == ''  # Quiet: nothing from the checkpoint library.
  lines = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
  assert len(lines) == 2 and all(' class ' in line and 'a:' in line for line in lines)
  code = predict.main([f'--workdir={trained}', str(bad)])
  err = capsys.readouterr().err
  assert code == 2 and 'notes.png' in err and 'Traceback' not in err
  assert err.startswith('error: DatasetError: ') and err.count('\n') == 1, err


def _save_images(directory, count, size=20):
  paths = []
  for i, image in enumerate(helpers.make_split(count, 4, size=size).images):
    path = directory / f'hand{i}_{size}.png'
    Image.fromarray(image).save(path)
    paths.append(str(path))
  return paths


def test_an_unreadable_image_is_reported_on_its_line_and_the_others_predicted(
    trained, tmp_path, capsys):
  good = _save_images(tmp_path, 2)
  bad = tmp_path / 'notes.png'
  bad.write_text('not an image')
  code = predict.main([f'--workdir={trained}', good[0], str(bad), good[1]])
  out, err = capsys.readouterr()
  assert code == 2
  assert [line.split(':')[0] for line in out.splitlines()[1:]] == good
  assert err.startswith('error: DatasetError: ') and err.count('\n') == 1, err
  assert 'notes.png' in err


def test_images_are_checked_before_the_checkpoint_is_loaded(trained, tmp_path, capsys):
  (tmp_path / 'config.json').write_text((trained / 'config.json').read_text())  # No checkpoints.
  bad = tmp_path / 'notes.png'
  bad.write_text('not an image')
  assert predict.main([f'--workdir={tmp_path}', str(bad)]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: DatasetError: ') and 'notes.png' in err, err


def test_a_decompression_bomb_is_one_line_per_image(trained, tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  over = _save_images(tmp_path, 1, size=12)  # 144 pixels: Pillow only warns.
  far_over = _save_images(tmp_path, 1, size=20)  # 400 pixels: Pillow raises.
  assert predict.main([f'--workdir={trained}', *over, *far_over]) == 2
  out, err = capsys.readouterr()
  lines = err.splitlines()
  assert out == '' and len(lines) == 2 and 'Traceback' not in err, err
  for line, path in zip(lines, over + far_over, strict=True):
    assert line.startswith('error: DatasetError: ') and path in line, line
    # The reason names the pixel limit the image is over (Pillow's refusal, past twice
    # MAX_IMAGE_PIXELS, names that threshold).
    assert re.search(r'cannot be read as an image: .*limit of (100|200) ', line), line


def test_top_k_lists_the_most_probable_classes_first(trained, tmp_path, capsys):
  paths = _save_images(tmp_path, 1)
  assert predict.main([f'--workdir={trained}', '--top_k=2', *paths]) == 0
  out, err = capsys.readouterr()
  assert err == ''  # Quiet: nothing from the checkpoint library.
  listing = out.splitlines()[-1].split('[')[1].rstrip(']').split()
  probs = load_predictor(str(trained)).probabilities(
      np.stack([predict.read_image(paths[0], 8)]))[0]
  names = ('a', 'b', 'c')
  expected = [f'{names[i]}:{probs[i]:.3f}' for i in np.argsort(-probs, kind='stable')[:2]]
  assert listing == expected
  assert predict.main([f'--workdir={trained}', *paths]) == 0
  assert len(capsys.readouterr().out.splitlines()[-1].split('[')[1].split()) == 3
  assert predict.default_top_k(1000) == 5 and predict.default_top_k(6) == 6


def test_a_run_on_synthetic_data_says_so_once(trained, tmp_path, capsys):
  paths = [str(tmp_path / f'{i}.png') for i in range(2)]
  for path in paths:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
  assert predict.main([f'--workdir={trained}', *paths]) == 0
  assert 'synthetic' not in capsys.readouterr().err  # This run's meta names no source.
  synthetic = write_trained(tmp_path / 'synthetic',
                            data_source='synthetic SIGNS (seed 0) cached in /cache')
  assert predict.main([f'--workdir={synthetic}', *paths]) == 0
  err = capsys.readouterr().err
  assert err.count('note: this model was trained on rendered hands, synthetic SIGNS') == 1, err
  assert 'other real photographs are outside what it saw' in err
