"""Transfer learning: starting from pretrained variables, freezing the backbone, and the
pieces the fine-tuning config relies on (h5 loading with a new head, 'caffe' input).

Training runs go through train_and_evaluate for 3 steps on 8x8 images of 4 classes, with
a two-stage ResNet of basic blocks (Keras layout, projection shortcuts) a few channels
wide, built as setup.build_model builds the zoo's (frozen BN exactly when the backbone is
frozen; checked on the zoo model separately), so that the optimizer's multi_transform,
the frozen BN and the checkpoint all take part while compiling in seconds. The saved
starting variables have random BN statistics, so that a run which used its own
initialisation, or let BN update its statistics, is caught.
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from resnet_jax import weights
from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import ConfigError, WeightsError
from resnet_jax.models import create_model
from resnet_jax.models.resnet import ResNet
from resnet_jax.train import base_config, config as config_lib, optim, setup, train_and_evaluate
from resnet_jax.train.checkpoint import Checkpointer, flatten
from resnet_jax.train.preprocess import preprocess
from resnet_jax.weights import caffe_preprocess, save_variables
from test_weights_import import keras_layers, write_h5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4
IMAGE_SIZE = 8
STEPS = 3


def tiny_config(**overrides):
  """A full config for a 3-step run of cifar_resnet20 on tiny_dataset(); overrides by dotted
  name ('finetune.init_from')."""
  config = base_config()
  config.model.name = 'cifar_resnet20'
  config.model.layout = 'keras'
  config.model.num_classes = NUM_CLASSES
  config.data.image_size = IMAGE_SIZE
  config.train.batch_size = 8
  config.train.num_steps = STEPS
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.05
  config.optim.momentum = 0.9
  # Decay must not reach frozen kernels either.
  config.optim.weight_decay = 1e-3
  config.speed.steps_per_dispatch = 1
  config.run.log_every_steps = STEPS
  config.run.checkpoint_every_steps = 100  # Only the final save.
  config.run.progress_bar = False
  config.run.tensorboard = False
  return helpers.apply_overrides(config, overrides)


def finetune_from(init_from):
  """The `finetune` group of tiny_config() with init_from set."""
  return tiny_config(**{'finetune.init_from': init_from}).finetune


def tiny_dataset() -> Dataset:
  """Random 8x8 images whose brightness tells the class."""
  def split(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    images = (rng.integers(0, 60, (n, IMAGE_SIZE, IMAGE_SIZE, 3))
              + 60 * labels[:, None, None, None]).astype(np.uint8)
    return Split(images, labels)
  return Dataset(split(32, 0), split(8, 1), tuple(f'c{i}' for i in range(NUM_CLASSES)),
                 'fine-tuning test data in memory')


def tiny_model(config) -> ResNet:
  """The network of a tiny run: fields from the config as in setup.build_model."""
  return ResNet(stage_sizes=(1,), block='basic', widths=(8,), stem='cifar', stem_width=4,
                shortcut='projection', num_classes=config.model.num_classes,
                layout=config.model.layout, frozen_bn=config.finetune.freeze_backbone)


def random_variables(model, seed: int) -> dict:
  """Variables of model.init's shapes with random values everywhere, BN statistics too
  (init's zeros and ones would hide a statistics update that happens to be small)."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), train=False))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32),
                        shapes['params'])
  stats = jax.tree.map(lambda a: rng.uniform(0.2, 1.5, a.shape).astype(np.float32),
                       shapes['batch_stats'])
  return {'params': params, 'batch_stats': stats}


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """(directory written by save_variables, the variables in it) for tiny_model()."""
  variables = random_variables(tiny_model(tiny_config()), seed=7)
  directory = save_variables(tmp_path_factory.mktemp('pretrained') / 'variables', variables)
  return directory, variables


def final_state(workdir) -> dict:
  """The state of the run's last checkpoint, through the training checkpoint API."""
  checkpointer = Checkpointer(str(workdir), keep=2, read_only=True)
  try:
    step = checkpointer.latest_step()
    assert step == STEPS
    state, meta = checkpointer.read(step)
  finally:
    checkpointer.close()
  assert meta['step'] == STEPS
  return state


def split_head(tree: dict) -> tuple[dict, dict]:
  """(flat leaves outside `head`, flat leaves of `head`)."""
  flat = flatten(tree)
  head = {k: v for k, v in flat.items() if k.split('/')[0] == 'head'}
  return {k: v for k, v in flat.items() if k not in head}, head


def run(tmp_path, directory, freeze: bool) -> dict:
  config = tiny_config(**{'finetune.init_from': str(directory),
                          'finetune.freeze_backbone': freeze})
  workdir = tmp_path / ('frozen' if freeze else 'trained')
  result = train_and_evaluate(config, str(workdir), model=tiny_model(config),
                              dataset=tiny_dataset())
  assert result['step'] == STEPS
  assert np.isfinite(result['train_loss'])
  return final_state(workdir)


@pytest.mark.slow  # Whole training runs.
def test_frozen_backbone_stays_bit_identical_and_head_learns(tmp_path, pretrained):
  directory, start = pretrained
  state = run(tmp_path, directory, freeze=True)
  assert int(state['step']) == STEPS
  backbone, head = split_head(state['params'])
  start_backbone, start_head = split_head(start['params'])
  assert sorted(backbone) == sorted(start_backbone) and len(backbone) > 10
  for name, value in backbone.items():
    assert value.dtype == start_backbone[name].dtype
    np.testing.assert_array_equal(value, start_backbone[name], err_msg=f'params/{name}')
  stats, start_stats = flatten(state['batch_stats']), flatten(start['batch_stats'])
  assert sorted(stats) == sorted(start_stats) and len(stats) > 5
  for name, value in stats.items():
    np.testing.assert_array_equal(value, start_stats[name], err_msg=f'batch_stats/{name}')
  # The head started from the saved one (same shape, so it is kept) and learned.
  assert sorted(head) == ['head/bias', 'head/kernel']
  for name, value in head.items():
    assert not np.array_equal(value, start_head[name]), f'{name} did not change'
    assert np.all(np.isfinite(value))


@pytest.mark.slow  # Whole training runs.
def test_without_freezing_the_backbone_and_statistics_change(tmp_path, pretrained):
  directory, start = pretrained
  state = run(tmp_path, directory, freeze=False)
  backbone, head = split_head(state['params'])
  start_backbone, start_head = split_head(start['params'])
  # A conv bias right before a BN gets no gradient but rounding noise (the BN subtracts
  # the batch mean) and no weight decay (kernels only); every other parameter must move.
  unchanged = [n for n, v in backbone.items() if np.array_equal(v, start_backbone[n])]
  assert set(unchanged) <= {n for n in backbone if n.endswith('/bias') and 'conv' in n}
  assert len(backbone) - len(unchanged) > 10
  stats, start_stats = flatten(state['batch_stats']), flatten(start['batch_stats'])
  unchanged = [n for n, v in stats.items() if np.array_equal(v, start_stats[n])]
  assert not unchanged, f'BN statistics not updated: {unchanged}'
  assert not any(np.array_equal(v, start_head[n]) for n, v in head.items())


def test_frozen_run_builds_frozen_bn_and_masks_all_but_the_head():
  config = tiny_config(**{'finetune.init_from': '/unused', 'finetune.freeze_backbone': True})
  assert setup.build_model(config).frozen_bn
  assert not setup.build_model(tiny_config()).frozen_bn
  params = {'stem_conv': {'kernel': jnp.ones((3, 3, 3, 2))},
            'head': {'kernel': jnp.ones((2, 4)), 'bias': jnp.ones((4,))}}
  tx, _ = helpers.create_optimizer(config, steps_per_epoch=4)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates['stem_conv']['kernel'], 0.0)
  assert np.all(np.asarray(updates['head']['kernel']) < 0)
  with pytest.raises(ConfigError, match='freeze_backbone'):
    config_lib.validate_config(tiny_config(**{'finetune.freeze_backbone': True}))


# --- init_from an h5 file -------------------------------------------------------


@pytest.fixture(scope='module')
def file_model_variables():
  """Random variables of the config's network (Keras layout) with a 10-class head: the
  layers a Keras-format h5 file of that network holds, in Keras Applications' names."""
  model = create_model('cifar_resnet20', layout='keras', num_classes=10)
  return random_variables(model, seed=3)


@pytest.fixture(scope='module')
def fresh_template():
  """(the config's zoo model, variables standing in for its fresh init): initial_variables
  takes the new head from whatever template it is given, and random values make any
  mix-up with the file's arrays visible (compiling a real init takes seconds)."""
  model = setup.build_model(tiny_config())
  return model, random_variables(model, seed=11)


@pytest.mark.parametrize('kind', ['other_classes', 'notop', 'full_model_same_classes'])
def test_h5_gives_the_file_backbone_and_a_head_for_the_config(tmp_path, kind,
  file_model_variables,
                                                               fresh_template):
  model, template = fresh_template
  source = file_model_variables
  if kind == 'full_model_same_classes':
    # A 4-class file: its head fits and is kept.
    rng = np.random.default_rng(5)
    head = {'kernel': rng.normal(size=(64, NUM_CLASSES)).astype(np.float32),
            'bias': rng.normal(size=(NUM_CLASSES,)).astype(np.float32)}
    source = {'params': dict(source['params'], head=head),
              'batch_stats': source['batch_stats']}
  layers = keras_layers(source, 'applications')
  if kind == 'notop':
    layers = [layer for layer in layers if layer[0] != 'predictions']
  path = tmp_path / f'{kind}.h5'
  write_h5(path, layers, full_model=kind == 'full_model_same_classes')

  loaded = weights.initial_variables(finetune_from(str(path)), model, template)

  backbone, head = split_head(loaded['params'])
  file_backbone, file_head = split_head(source['params'])
  template_backbone, template_head = split_head(template['params'])
  assert sorted(backbone) == sorted(template_backbone)
  for name, value in backbone.items():
    np.testing.assert_array_equal(value, file_backbone[name], err_msg=name)
  stats, file_stats = flatten(loaded['batch_stats']), flatten(source['batch_stats'])
  assert sorted(stats) == sorted(flatten(template['batch_stats']))
  for name, value in stats.items():
    np.testing.assert_array_equal(value, file_stats[name], err_msg=name)
  expected_head = file_head if kind == 'full_model_same_classes' else template_head
  assert head['head/kernel'].shape == (64, NUM_CLASSES)
  for name, value in head.items():
    np.testing.assert_array_equal(value, expected_head[name], err_msg=name)


def test_h5_of_another_network_is_a_config_error_naming_the_file(tmp_path, fresh_template):
  model, template = fresh_template
  other = create_model('cifar_resnet20', layout='keras', num_classes=10, widths=(32, 64, 128))
  path = tmp_path / 'narrow.h5'
  write_h5(path, keras_layers(random_variables(other, seed=1), 'applications'))
  with pytest.raises((ConfigError, WeightsError), match='narrow.h5'):
    weights.initial_variables(finetune_from(str(path)), model, template)


def test_saved_variables_of_another_shape_are_a_config_error_naming_both_shapes(tmp_path):
  model = tiny_model(tiny_config())
  template = random_variables(model, seed=2)
  wide = random_variables(ResNet(stage_sizes=(1,), block='basic', widths=(16,), stem='cifar',
                                 stem_width=4, shortcut='projection', num_classes=NUM_CLASSES,
                                 layout='keras'), seed=3)
  directory = save_variables(tmp_path / 'wide', wide)
  with pytest.raises(ConfigError) as info:
    weights.initial_variables(finetune_from(directory), model, template)
  # The head (16 -> 4 there) is replaced by the fresh one; the first backbone array differs.
  assert str(info.value) == (
      f'config.finetune.init_from={directory!r}: params/stage1_block1/bn1/bias has shape (16,) '
      'there but (8,) in the model built from the config')
  # A head of other classes alone is replaced, not an error; the backbone is the file's.
  other_head = random_variables(
      tiny_model(tiny_config(**{'model.num_classes': NUM_CLASSES + 1})), seed=4)
  directory = save_variables(tmp_path / 'other_head', other_head)
  loaded = weights.initial_variables(finetune_from(directory), model, template)
  backbone, head = split_head(loaded['params'])
  np.testing.assert_array_equal(head['head/kernel'], template['params']['head']['kernel'])
  file_backbone, _ = split_head(other_head['params'])
  for name, value in backbone.items():
    np.testing.assert_array_equal(value, file_backbone[name], err_msg=name)
  # An array the model lacks is named as absent on the model's side.
  extra = {'params': dict(template['params'], extra={'kernel': np.ones((2,), np.float32)}),
           'batch_stats': template['batch_stats']}
  directory = save_variables(tmp_path / 'extra', extra)
  with pytest.raises(ConfigError, match=r'params/extra/kernel has shape \(2,\) there but absent'):
    weights.initial_variables(finetune_from(directory), model, template)


# --- the fine-tuning config and its preprocessing ---------------------------------


def test_caffe_mode_equals_caffe_preprocess():
  images = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
  ours = np.asarray(preprocess(jnp.asarray(images), 'caffe'))
  np.testing.assert_array_equal(ours, np.asarray(caffe_preprocess(images)))
  # Independently: BGR order, ImageNet means subtracted, no scaling.
  r, g, b = (images[..., i].astype(np.float32) for i in range(3))
  expected = np.stack([b - np.float32(103.939), g - np.float32(116.779),
                       r - np.float32(123.68)], -1)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
  assert ours.dtype == np.float32


def load_config(name):
  path = os.path.join(REPO, 'experiments', 'configs', name)
  spec = importlib.util.spec_from_file_location(name.removesuffix('.py'), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_signs_finetune_config_validates_and_builds():
  config = load_config('signs_resnet50_finetune.py')
  config_lib.validate_config(config)
  assert (config.model.name, config.model.layout, config.data.preprocess) == (
      'resnet50', 'keras', 'caffe')
  config.finetune.init_from = '/path/to/notop.h5'
  config.finetune.freeze_backbone = True
  config_lib.validate_config(config)
  model = setup.build_model(config)
  assert model.frozen_bn and model.num_classes == 6
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, config.data.image_size, config.data.image_size, 3)),
      train=False))
  assert shapes['params']['head']['kernel'].shape == (2048, 6)
  count = lambda tree: sum(int(np.prod(s.shape)) for s in jax.tree.leaves(tree))
  # Keras Applications' ResNet50 without top: 23,534,592 trainable weights and 53,120
  # moving statistics; plus a 2048 -> 6 head.
  assert count(shapes['params']) == 23_534_592 + 2048 * 6 + 6
  assert count(shapes['batch_stats']) == 53_120
  labels = flatten(optim.head_labels(shapes['params']))
  assert {k for k, v in labels.items() if v == 'train'} == {'head/kernel', 'head/bias'}
