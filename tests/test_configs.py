"""Every config file loads, validates and builds its model; bad fields are named; the CLI."""
import glob
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib, setup
from resnet_jax.train.optim import create_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, 'experiments', 'configs', '*.py')))


def load_config_file(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_the_main_configs_exist():
  names = {os.path.basename(p) for p in CONFIG_FILES}
  assert {'signs_resnet50.py', 'digits_resnet.py', 'cifar10_resnet.py',
          'imagenet_resnet50_fake.py'} <= names


def test_base_config_is_grouped_and_locked():
  config = config_lib.base_config()
  assert sorted(config) == sorted(config_lib.GROUPS)
  assert set(config.speed) == {'conv_impl', 'data_workers', 'steps_per_dispatch',
                               'loop_on_device', 'crop_resize'}
  assert set(config.data.augment) == {'crop_padding', 'flip', 'inception_crop'}
  with pytest.raises(AttributeError, match='learnin_rate'):
    config.optim.learnin_rate = 0.1
  with pytest.raises(AttributeError):
    config.data_on_device = True  # Removed: no device-resident data.


def test_a_field_missing_from_a_hand_made_config_is_named():
  config = config_lib.base_config()
  with config.unlocked():
    del config.optim['learning_rate']
  with pytest.raises(ConfigError, match=r'config\.optim\.learning_rate is missing'):
    config_lib.validate_config(config)


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_config_file_loads_validates_and_builds_its_model(path):
  config = load_config_file(path)
  module_doc = open(path).read().split('"""')[1]
  assert 'python experiments/' in module_doc  # The docstring gives the command.
  if 'base' in config:
    config = config.base  # An experiment of several runs (ablation): its training config.
  config_lib.validate_config(config)
  model = setup.build_model(config)
  shape = (1, config.data.image_size, config.data.image_size, 3)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  assert variables['params']['head']['kernel'].shape[-1] == config.model.num_classes
  tx, _ = create_optimizer(config.optim, 100, config_lib.total_steps(config.train, 100),
                           freeze_backbone=config.finetune.freeze_backbone)
  jax.eval_shape(tx.init, variables['params'])


def test_main_job_config_is_the_course_setting():
  config = load_config_file(os.path.join(ROOT, 'experiments', 'configs', 'signs_resnet50.py'))
  assert (config.model.name, config.model.layout, config.optim.name,
          config.train.batch_size) == ('resnet50', 'coursera', 'adam', 32)
  assert config.optim.learning_rate == 1e-3 and config.optim.adam_eps == 1e-7
  assert config.data.name == 'signs' and config.data.data_dir is None


def _base():
  config = config_lib.base_config()
  return config


@pytest.mark.parametrize('field,value,expected', [
    ('model.name', 'resnet51', 'one of'),
    ('model.layout', 'caffe', 'one of'),
    ('optim.name', 'adamw', "one of ('adam', 'sgd')"),
    ('data.name', 'mnist', 'one of'),
    ('optim.schedule', 'cosine', 'one of'),
    ('model.dtype', 'float16', "one of ('float32', 'bfloat16')"),
    ('optim.learning_rate', -0.1, 'a finite positive number'),
    ('optim.learning_rate', float('inf'), 'a finite positive number'),
    ('optim.learning_rate', float('nan'), 'a finite positive number'),
    ('optim.weight_decay', float('inf'), 'a finite number >= 0'),
    ('train.batch_size', 0, 'a positive integer'),
    ('train.num_epochs', 0, 'a finite positive number of epochs'),
    ('train.label_smoothing', 1.5, 'in [0, 1)'),
    ('train.nan_policy', 'ignore', 'one of'),
    ('data.preprocess', 'imagenet', 'one of'),
    ('optim.momentum', 1.0, 'in [0, 1)'),
    ('run.keep_checkpoints', 0, 'a positive integer'),
    ('speed.steps_per_dispatch', 0, 'a positive integer'),
    ('speed.crop_resize', 'gpu', "one of ('auto', 'device', 'host')"),
    ('data.augment.crop_padding', -1, 'an integer >= 0'),
    ('optim.lr_boundaries', (200, 100), 'increasing positive step numbers'),
    ('train.bn_recompute_batches', -1, 'an integer >= 0'),
    ('finetune.init_from', '', 'None or a checkpoint/weights path'),
])
def test_validation_names_the_bad_field(field, value, expected):
  config = _base()
  *parents, leaf = field.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  with config.unlocked():
    node[leaf] = value
  with pytest.raises(ConfigError) as info:
    config_lib.validate_config(config)
  message = str(info.value)
  assert message.startswith(f'config.{field}={value!r}'), message
  assert expected in message


def test_piecewise_without_boundaries_is_refused():
  config = _base()
  config.optim.schedule = 'piecewise'
  with pytest.raises(ConfigError, match='config.optim.lr_boundaries'):
    config_lib.validate_config(config)


def test_zero_init_of_a_plain_net_is_refused():
  config = _base()
  config.model.name, config.model.zero_init_last_bn = 'plain50', True
  with pytest.raises(ConfigError,
                     match="zero_init_last_bn=True with config.model.name='plain50'"):
    config_lib.validate_config(config)
  config.model.name = 'resnet50'
  config_lib.validate_config(config)


def test_zero_init_of_a_plain_net_is_refused_when_the_caller_builds_the_model():
  """A sweep (or a test) passes its own module: check_model=False skips the zoo names, not
  the zero-init check of the model config.model.name names."""
  config = _base()
  config.model.name, config.model.zero_init_last_bn = 'cifar_plain8', True
  with pytest.raises(ConfigError,
                     match="zero_init_last_bn=True with config.model.name='cifar_plain8'"):
    config_lib.validate_config(config, check_model=False)
  config.model.name = 'cifar_resnet8'
  config_lib.validate_config(config, check_model=False)
  config.model.name = 'my_own_net'  # Not a zoo name: nothing to check it against.
  config_lib.validate_config(config, check_model=False)
  with pytest.raises(ConfigError, match="config.model.name='my_own_net'"):
    config_lib.validate_config(config)


def test_every_cifar_depth_is_a_valid_model_field():
  config = _base()
  config.model.name, config.model.num_classes, config.data.image_size = 'cifar_plain14', 10, 8
  config_lib.validate_config(config)
  model = setup.build_model(config)
  assert tuple(model.stage_sizes) == (2, 2, 2) and not model.residual
  config.model.name = 'cifar_plain15'
  with pytest.raises(ConfigError,
                     match=r"config.model.name='cifar_plain15': expected one of .*6n \+ 2"):
    config_lib.validate_config(config)


@pytest.mark.slow  # Builds and trains a ResNet.
def test_zero_init_reaches_the_model():
  config = _base()
  config.model.name, config.model.num_classes, config.data.image_size = 'cifar_resnet20', 10, 8
  config.model.zero_init_last_bn = True
  model = setup.build_model(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)['params']
  blocks = {name: p for name, p in params.items() if name.startswith('stage')}
  assert len(blocks) == 9
  for block in blocks.values():
    assert not jnp.any(block['bn2']['scale']) and jnp.all(block['bn1']['scale'] == 1)
  assert jnp.all(params['stem_bn']['scale'] == 1)


def test_image_too_small_for_resnet50_names_the_size():
  config = _base()
  config.data.image_size = 16
  with pytest.raises(ConfigError, match='image_size=16'):
    setup.build_model(config)


def test_explicit_signs_data_dir_without_the_files_names_the_field(tmp_path):
  config = _base()
  config.data.data_dir = str(tmp_path)
  with pytest.raises(ConfigError, match=r"config\.data\.data_dir=.*train_signs\.h5"):
    setup.load_data(config.data)


def test_missing_data_dir_names_the_field(tmp_path):
  config = _base()
  config.data.data_dir = str(tmp_path / 'nowhere')
  with pytest.raises(ConfigError, match=r"config\.data\.data_dir=.*nowhere.*does not exist"):
    setup.load_data(config.data)


def test_cifar10_without_data_dir_is_a_config_error():
  config = load_config_file(os.path.join(ROOT, 'experiments', 'configs', 'cifar10_resnet.py'))
  with pytest.raises(ConfigError, match='data_dir'):
    setup.load_data(config.data)


def _train_cli(*args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'train.py'), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # Subprocess runs of experiments/train.py.
def test_cli_library_error_exits_2_with_one_line_and_no_traceback(tmp_path):
  proc = _train_cli('--config.optim.name=adamw', f'--workdir={tmp_path}')
  assert proc.returncode == 2
  assert "config.optim.name='adamw'" in proc.stderr
  assert 'Traceback' not in proc.stderr
  debug = _train_cli('--config.optim.name=adamw', f'--workdir={tmp_path}', '--debug')
  assert debug.returncode == 2 and 'Traceback' in debug.stderr


@pytest.mark.slow  # A subprocess run of experiments/train.py.
def test_cli_misspelled_override_is_rejected_by_name(tmp_path):
  proc = _train_cli('--config.train.num_epoch=3', f'--workdir={tmp_path}')
  assert proc.returncode != 0
  assert 'num_epoch' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_digits_config_dispatches_and_logs_one_epoch_at_a_time():
  from resnet_jax.data import load_dataset, pipeline
  config = load_config_file(os.path.join(ROOT, 'experiments', 'configs', 'digits_resnet.py'))
  train = load_dataset('digits', image_size=config.data.image_size).train
  per_epoch = pipeline.steps_per_epoch(len(train), config.train.batch_size)
  assert len(train) == 1437 and per_epoch == 22  # The numbers its comment gives.
  assert config.speed.steps_per_dispatch == config.run.log_every_steps == per_epoch
  assert config.run.checkpoint_every_steps == 10 * per_epoch


def test_tiny_test_docstring_says_what_it_trains():
  path = os.path.join(ROOT, 'experiments', 'configs', 'tiny_test.py')
  config = load_config_file(path)
  with open(path) as f:
    doc = f.read().split('"""')[1]
  assert config.data.name == 'fake_imagenet' and config.model.num_classes == 1000
  assert 'random labels among 1000 classes' in doc and 'digits' not in doc
  assert '0.1' not in doc  # No accuracy promise: the labels carry no signal.
