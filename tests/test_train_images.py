"""Training on streamed images (dataset 'images'): prepared shards learn well above chance,
a bad shard stops the run before anything is written, and evaluation reports top-5
accuracy from 10 classes on. (Kill/resume and several processes: test_images_processes.py.)"""
import functools
import json
import os
import shutil

import _image_data
import image_folders
import jax
import numpy as np
import pytest
from PIL import Image

import _fault_helpers as fh
import helpers as fx
from resnet_jax.data import augment, image_records, images as images_lib, pipeline
from resnet_jax.data.prepare_images import PrepareOptions, prepare_images
from resnet_jax.errors import DatasetError
from resnet_jax.train import (
  checkpoint as checkpoint_lib,
  devices as devices_lib,
  feed as feed_lib,
  setup,
  steps,
)
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.train.state import create_train_state, state_to_host
from resnet_jax.train.workdir import prepare_workdir, save_config

NUM_TRAIN, NUM_VAL = 240, 60


def images_config(data_dir, **overrides):
  """TinyNet on 8x8 crops of the generated colour pictures: 15 steps per epoch, 2 epochs."""
  return fx._config({'data.name': 'images', 'data.data_dir': data_dir, 'train.num_epochs': 2,
                     'train.batch_size': 16, 'optim.learning_rate': 0.05,
                     'run.log_every_steps': 5, 'run.checkpoint_every_steps': 10,
                     'data.augment.flip': True, 'data.augment.inception_crop': True,
                     **overrides})


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  return _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), NUM_TRAIN, NUM_VAL)


@pytest.mark.slow  # Two short training runs.
def test_training_on_prepared_shards_learns_the_classes_and_a_bad_shard_changes_nothing(
    shards, tmp_path):
  data = str(tmp_path / 'data')
  shutil.copytree(shards, data)
  workdir = str(tmp_path / 'run')
  result = train_and_evaluate(images_config(data), workdir, model=fx.TinyNet())
  assert result['step'] == 30 and result['data_source'].startswith('prepared images')
  assert result['eval_accuracy'] > 0.9  # Chance is 1/3.
  assert 'eval_top5_accuracy' not in result  # Fewer than 10 classes.
  assert fh.read_checkpoint(workdir, 30, tmp_path)[1]['class_names'] == list(
      _image_data.CLASSES)

  # A shard truncated before a longer rerun: a DatasetError naming it, the workdir unchanged.
  before = fh.file_hashes(workdir)
  shard = os.path.join(data, image_records.read_index(data).splits['train'].shards[0])
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) // 2)
  with pytest.raises(DatasetError, match=shard):
    train_and_evaluate(images_config(data, **{'train.num_epochs': 3}), workdir, model=fx.TinyNet())
  assert fh.file_hashes(workdir) == before


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """4 classes x 60 generated JPEG and PNG pictures, src/<class>/<image>."""
  root = str(tmp_path_factory.mktemp('folder') / 'src')
  image_folders.write_image_folder(root, per_class=60)
  return root


@pytest.mark.slow  # Two short training runs (~10 s on the idle machine).
def test_a_folder_prepared_and_the_same_folder_raw_both_learn_the_classes(folder, tmp_path):
  prepared = str(tmp_path / 'prepared')
  prepare_images(folder, prepared, PrepareOptions(max_size=32, num_shards=2))
  for data_dir, source in ((prepared, 'prepared images'), (folder, 'image folder')):
    config = images_config(data_dir, **{'model.num_classes': 4})
    result = train_and_evaluate(config, str(tmp_path / f'run_{len(source)}'),
                                model=fx.TinyNet(num_classes=4))
    assert result['data_source'].startswith(source)
    assert result['eval_accuracy'] > 0.7, result  # Chance is 1/4; 24 held-out pictures.


def test_evaluation_reports_top5_accuracy_from_ten_classes_on():
  model = fx.TinyNet(num_classes=12)
  config = fx.tiny_config(**{'model.num_classes': 12})
  tx, _ = fx.create_optimizer(config, steps_per_epoch=10)
  devices = jax.local_devices()[:1]
  state = devices_lib.replicate_on_devices(
      jax.tree.map(np.asarray, create_train_state(model, tx, (8, 8, 3), seed=0)), devices)
  settings = steps.StepSettings(num_classes=12)
  evaluate = jax.pmap(functools.partial(steps.eval_step, model=model, settings=settings),
                      axis_name='batch', devices=devices)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (1, 16, 8, 8, 3)).astype(np.uint8)
  labels = rng.integers(0, 12, (1, 16)).astype(np.int32)
  mask = np.ones((1, 16), np.float32)
  mask[0, -3:] = 0
  metrics = feed_lib.eval_metrics([evaluate(state, {'image': images, 'label': labels,
                                                 'mask': mask})])
  variables = {'params': jax.tree.map(lambda x: x[0], state.params),
               'batch_stats': jax.tree.map(lambda x: x[0], state.batch_stats)}
  logits = np.asarray(model.apply(variables, images[0] / 255.0, train=False))[:13]
  rank = (logits > logits[np.arange(13), labels[0, :13]][:, None]).sum(-1)
  assert metrics['eval_top5_accuracy'] == pytest.approx(np.mean(rank < 5))
  assert metrics['eval_accuracy'] == pytest.approx(np.mean(rank == 0))
  assert metrics['eval_top5_accuracy'] > metrics['eval_accuracy']


@pytest.mark.slow  # Compiles a CIFAR ResNet-20 for the scripts.
@pytest.mark.parametrize('inception_crop', [True, False])
def test_evaluate_and_predict_see_a_streamed_run_as_its_evaluation_does(
    shards, tmp_path, capsys, inception_crop):
  """Each recipe's evaluation view: Inception crops are scored on the centre crop, the small
  pictures' recipe on the whole picture resized (what it trains on)."""
  from experiments import evaluate, predict
  from resnet_jax.train.inference import load_predictor
  view, other = ((augment.center_crop, augment.resize_square) if inception_crop
                 else (augment.resize_square, augment.center_crop))
  # A centre crop needs the JPEG decoded to no more than its resize's shorter side.
  decode_side = augment.resize_target(8) if inception_crop else None
  workdir = _untrained_run(str(tmp_path / 'run'), shards, inception_crop)

  assert evaluate.main([f'--workdir={workdir}', '--batch_size=10']) == 0
  result = json.loads(capsys.readouterr()[0].strip().splitlines()[-1])
  split = images_lib.open_images(shards).test
  images = np.stack([view(pipeline.decode(split, i, decode_side)[1], 8)
                     for i in range(len(split))])
  labels = np.asarray([split[i][0] for i in range(len(split))])
  predictor = load_predictor(workdir, 'latest')
  predicted = np.concatenate([predictor.probabilities(images[i:i + 10]).argmax(-1)
                              for i in range(0, len(images), 10)])  # One compiled shape.
  assert result['count'] == NUM_VAL and 'top5_accuracy' not in result
  assert result['accuracy'] == pytest.approx(np.mean(predicted == labels))
  # An untrained net's accuracy on these pictures is the same on either view: the pictures
  # the evaluation scores are compared instead.
  recording = _Recording(predictor)
  assert evaluate.split_accuracy(recording, split, 10)['count'] == NUM_VAL
  np.testing.assert_array_equal(np.concatenate(recording.images), images)

  picture = str(tmp_path / 'picture.png')
  _image_data.picture(np.random.default_rng(0), 'red').save(picture)
  assert predict.main([f'--workdir={workdir}', '--checkpoint=latest', picture]) == 0
  line = capsys.readouterr()[0].strip().splitlines()[-1]
  listings = [_listing(predictor, v(Image.open(picture).convert('RGB'), 8)) for v in (view, other)]
  assert listings[0] != listings[1]  # The printed probabilities tell the views apart.
  assert line.endswith(f'[{listings[0]}]'), (line, listings)
  assert all(name in line for name in _image_data.CLASSES)  # The index's class names.


class _Recording:
  """A predictor that keeps the pictures it is asked about."""

  def __init__(self, predictor):
    self.predictor, self.images = predictor, []

  def __getattr__(self, name):
    return getattr(self.predictor, name)

  def probabilities(self, images):
    self.images.append(images)
    return self.predictor.probabilities(images)


def _listing(predictor, image) -> str:
  """predict.py's listing of the classes and their probabilities for one picture."""
  probs = predictor.probabilities(image[None])[0]
  return ' '.join(f'{predictor.class_names[i]}:{probs[i]:.3f}'
                  for i in np.argsort(-probs, kind='stable'))


def _untrained_run(workdir, shards, inception_crop):
  """A workdir of an (untrained) CIFAR ResNet-20 run on `shards`, 8x8, its class names."""
  config = fx.tiny_config(**{'model.name': 'cifar_resnet20', 'model.layout': 'torchvision',
                             'data.image_size': 8, 'data.name': 'images', 'data.data_dir': shards,
                             'data.augment.inception_crop': inception_crop})
  prepare_workdir(workdir, config)
  save_config(workdir, config)
  model = setup.build_model(config)
  tx, _ = fx.create_optimizer(config, steps_per_epoch=8)
  state = jax.tree.map(np.asarray, create_train_state(model, tx, (8, 8, 3), seed=0))
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=1)
  checkpointer.save(3, state_to_host(state), {'class_names': list(_image_data.CLASSES)},
                    eval_accuracy=0.5)
  checkpointer.wait()
  checkpointer.close()
  return workdir
