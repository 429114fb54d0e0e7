"""Bad input: each case gives a typed error saying what is wrong and where, and leaves every
file it touched as it was. A few go through the CLI: non-zero exit, one line, no traceback
(--debug shows it).

Library cases run in-process and fail before anything compiles. Cases that go through
train_and_evaluate start on the workdir of an earlier run (its config.json, metrics and a
file standing for its checkpoints), whose bytes must survive the failed start.
"""
import json
import os
import pickle
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _fault_helpers as fh
import helpers
from resnet_jax import data, models, weights
from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import ConfigError, DatasetError, WeightsError
from resnet_jax.train import base_config, loop
from resnet_jax.weights import keras_mapping

# ------------------------------------------------------------------ files for the cases


def write_signs(directory, num_train=6, num_test=3, image_shape=(64, 64, 3), dtype=np.uint8,
                train_labels=None, classes=(0, 1, 2, 3, 4, 5)):
  """A pair of SIGNS files in the course's layout (small), returns the directory."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for split, n in (('train', num_train), ('test', num_test)):
    images = rng.integers(0, 256, (n,) + tuple(image_shape)).astype(dtype)
    labels = np.arange(n) % len(classes)
    if split == 'train' and train_labels is not None:
      labels = np.asarray(train_labels)
    with h5py.File(os.path.join(directory, f'{split}_signs.h5'), 'w') as f:
      f[f'{split}_set_x'] = images
      f[f'{split}_set_y'] = labels.astype(np.int64)
      f['list_classes'] = np.asarray(classes, np.int64)
  return str(directory)


def write_cifar_binary(directory, labels=None, extra_bytes=0):
  """cifar-10-batches-bin/ with six 4-image batch files."""
  batches = os.path.join(directory, 'cifar-10-batches-bin')
  os.makedirs(batches, exist_ok=True)
  rng = np.random.default_rng(0)
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    records = rng.integers(0, 256, (4, 3073)).astype(np.uint8)
    records[:, 0] = labels if labels is not None else np.arange(4)
    with open(os.path.join(batches, name + '.bin'), 'wb') as f:
      f.write(records.tobytes() + b'\0' * extra_bytes)
  return str(directory)


class _RunsAShellCommand:
  """Unpickling this calls os.system: what a malicious 'CIFAR batch' would carry."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def write_cifar_pickle_that_runs_code(directory, marker):
  batches = os.path.join(directory, 'cifar-10-batches-py')
  os.makedirs(batches, exist_ok=True)
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    with open(os.path.join(batches, name), 'wb') as f:
      pickle.dump({b'data': _RunsAShellCommand(marker), b'labels': [0]}, f, protocol=2)
  return str(directory)


def write_keras_weights_without(path, model, missing_layer: str):
  """Keras 2 `save_weights` layout for `model`'s variables, leaving out one layer."""
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                               train=False))
  names = []
  with h5py.File(path, 'w') as f:
    for layer in keras_mapping.model_layers(template):
      name = keras_mapping.keras_applications_name(layer) or 'predictions'
      if name == missing_layer:
        continue
      group = f.create_group(name)
      group.attrs['weight_names'] = [w.encode() for w in layer.weights]
      for weight, shape in layer.weights.items():
        group[weight] = np.ones(shape, np.float32)
      names.append(name.encode())
    f.attrs['layer_names'] = names
  return str(path)


def earlier_run(workdir, config):
  """A workdir as an earlier run of `config` (with another seed) left it."""
  os.makedirs(workdir, exist_ok=True)
  earlier = config.copy_and_resolve_references()
  earlier.train.seed = config.train.seed + 1
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(earlier.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': 8, 'train_loss': 1.0, 'train_accuracy': 0.5}) + '\n')
  return str(workdir)


def signs_config(data_dir, **overrides):
  """base_config() on SIGNS in data_dir; overrides by dotted name ('model.name')."""
  config = base_config()
  config.data.data_dir = str(data_dir)
  config.run.progress_bar = False
  config.run.tensorboard = False
  return helpers.apply_overrides(config, overrides)


def train(config, workdir):
  """train_and_evaluate on the workdir of an earlier run (made now, before any hashing)."""
  earlier_run(workdir, config)
  return lambda: loop.train_and_evaluate(config, workdir)


def small_train(workdir, **overrides):
  """Like `train`, for the small in-memory model and data."""
  config = helpers.fault_config(**overrides)
  earlier_run(workdir, config)
  return lambda: loop.train_and_evaluate(config, workdir, model=helpers.TinyNet(),
                                         dataset=helpers.fault_dataset())


# ------------------------------------------------------------------ the catalogue
# name -> case(tmp) returning (action, error type, message fragments, paths to hash);
# '{tmp}' in a fragment stands for the case's directory.


def _signs_missing_dir(tmp):
  config = signs_config(tmp / 'no_such_dir')
  return (train(config, str(tmp / 'run')), ConfigError,
          ['config.data.data_dir', 'no_such_dir', 'does not exist'], [tmp / 'run'])


def _signs_html_page(tmp):
  directory = write_signs(tmp / 'signs')
  with open(tmp / 'signs' / 'train_signs.h5', 'wb') as f:
    f.write(b'<!DOCTYPE html><html><body>Sign in to continue</body></html>')
  return (lambda: data.load_signs(directory), DatasetError,
          ['train_signs.h5', 'HTML page'], [tmp / 'signs'])


def _signs_truncated(tmp):
  directory = write_signs(tmp / 'signs', num_train=40)
  path = tmp / 'signs' / 'train_signs.h5'
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  return (lambda: data.load_signs(directory), DatasetError, ['train_signs.h5'],
          [tmp / 'signs'])


def _signs_wrong_shape(tmp):
  directory = write_signs(tmp / 'signs', image_shape=(32, 32, 3))
  return (lambda: data.load_signs(directory), DatasetError,
          ['train_signs.h5', '(6, 32, 32, 3)', 'expected (N, 64, 64, 3)'], [tmp / 'signs'])


def _signs_wrong_dtype(tmp):
  directory = write_signs(tmp / 'signs', dtype=np.float32)
  return (lambda: data.load_signs(directory), DatasetError,
          ['train_signs.h5', 'float32', 'expected uint8'], [tmp / 'signs'])


def _signs_label_out_of_range(tmp):
  directory = write_signs(tmp / 'signs', train_labels=[0, 1, 2, 3, 4, 9])
  return (lambda: data.load_signs(directory), DatasetError,
          ['train_signs.h5', 'train_set_y', '[9]', 'list_classes'], [tmp / 'signs'])


def _signs_empty_split(tmp):
  directory = write_signs(tmp / 'signs', num_test=0)
  return (lambda: data.load_signs(directory), DatasetError,
          ['test_signs.h5', 'empty'], [tmp / 'signs'])


def _signs_one_file_missing(tmp):
  directory = write_signs(tmp / 'signs')
  os.remove(tmp / 'signs' / 'test_signs.h5')
  config = signs_config(directory)
  return (train(config, str(tmp / 'run')), ConfigError,
          ['test_signs.h5', 'missing'], [tmp / 'signs', tmp / 'run'])


def _cifar_wrong_size(tmp):
  directory = write_cifar_binary(tmp / 'cifar', extra_bytes=5)
  return (lambda: data.load_cifar10(directory), DatasetError,
          ['data_batch_1.bin', '12297 bytes', 'multiple of 3073'], [tmp / 'cifar'])


def _cifar_label_out_of_range(tmp):
  directory = write_cifar_binary(tmp / 'cifar', labels=[0, 1, 2, 10])
  return (lambda: data.load_cifar10(directory), DatasetError,
          ['data_batch_1.bin', 'labels span [0, 10]', 'expected [0, 9]'], [tmp / 'cifar'])


def _cifar_pickle_runs_code(tmp):
  marker = tmp / 'code_ran'
  directory = write_cifar_pickle_that_runs_code(tmp / 'cifar', marker)

  def action():
    try:
      data.load_cifar10(directory)
    finally:
      assert not marker.exists(), 'the pickle ran its code'
  return (action, DatasetError, ['data_batch_1', 'system', 'refused'], [tmp / 'cifar'])


def _cifar_no_batches(tmp):
  os.makedirs(tmp / 'empty')
  return (lambda: data.load_cifar10(str(tmp / 'empty')), DatasetError,
          ['empty', 'no CIFAR-10 batches'], [tmp / 'empty'])


def _split_wrong_dtype(tmp):
  return (lambda: Split(np.zeros((2, 8, 8, 3), np.float32), np.zeros(2, np.int32)),
          DatasetError, ['Split.images', 'float32', 'expected a uint8'], [])


def _dataset_labels_beyond_classes(tmp):
  split = Split(np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1, 5], np.int32))
  return (lambda: Dataset(split, split, ('a', 'b'), 'test'), DatasetError,
          ['Dataset.train', 'labels span [0, 5]', 'expected [0, 1]'], [])


def _image_too_small_for_model(tmp):
  config = signs_config(tmp / 'unused', **{'data.name': 'fake_imagenet',
                                           'model.num_classes': 1000, 'model.name': 'resnet50',
                                           'data.image_size': 16})
  return (train(config, str(tmp / 'run')), ConfigError,
          ['image_size=16', 'expected image_size >= 32'], [tmp / 'run'])


def _image_size_not_the_data(tmp):
  return (small_train(str(tmp / 'run'), **{'data.image_size': 6}), ConfigError,
          ['config.data.image_size=6', '8x8'], [tmp / 'run'])


def _num_classes_not_the_data(tmp):
  return (small_train(str(tmp / 'run'), **{'model.num_classes': 7}), ConfigError,
          ['config.model.num_classes=7', 'has 3 classes'], [tmp / 'run'])


def _batch_larger_than_data(tmp):
  return (small_train(str(tmp / 'run'), **{'train.batch_size': 64}), ConfigError,
          ['config.train.batch_size=64', 'larger than the training split (48'], [tmp / 'run'])


def _unknown_name(field, value):
  def case(tmp):
    config = signs_config(tmp / 'unused', **{field: value})
    return (train(config, str(tmp / 'run')), ConfigError,
            [f'config.{field}={value!r}', 'expected one of'], [tmp / 'run'])
  return case


def _negative_learning_rate(tmp):
  return (small_train(str(tmp / 'run'), **{'optim.learning_rate': -0.1}), ConfigError,
          ['config.optim.learning_rate=-0.1', 'expected a finite positive number'], [tmp / 'run'])


def _infinite_learning_rate(tmp):
  return (small_train(str(tmp / 'run'), **{'optim.learning_rate': float('inf')}), ConfigError,
          ['config.optim.learning_rate=inf', 'expected a finite positive number'],
          [tmp / 'run'])


def _workdir_of_the_flat_config_layout(tmp):
  workdir = tmp / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps({'model': 'resnet18', 'learning_rate': 0.01}))
  config = helpers.fault_config()
  return (lambda: loop.train_and_evaluate(config, str(workdir), model=helpers.TinyNet(),
                                          dataset=helpers.fault_dataset()),
          ConfigError, ['config.json', 'earlier flat config layout', 'new --workdir'], [workdir])


def _zero_checkpoint_period(tmp):
  return (small_train(str(tmp / 'run'), **{'run.checkpoint_every_steps': 0}), ConfigError,
          ['config.run.checkpoint_every_steps=0', 'expected a positive integer'], [tmp / 'run'])


def _workdir_not_writable(tmp):
  blocker = tmp / 'a_file'
  blocker.write_text('not a directory')
  config = helpers.fault_config()
  return (lambda: loop.train_and_evaluate(config, str(blocker / 'run'), model=helpers.TinyNet(),
                                          dataset=helpers.fault_dataset()),
          ConfigError, [f'workdir {str(blocker / "run")!r} cannot be written'], [blocker])


def _workdir_of_another_model(tmp):
  workdir = earlier_run(str(tmp / 'run'),
                        signs_config(tmp / 'unused', **{'model.name': 'resnet18'}))
  config = signs_config(tmp / 'unused', **{'model.name': 'resnet50'})
  return (lambda: loop.train_and_evaluate(config, workdir), ConfigError,
          ["config.model.name: 'resnet18' there, 'resnet50' now"], [tmp / 'run'])


def _init_from_missing(tmp):
  return (small_train(str(tmp / 'run'), **{'finetune.init_from': str(tmp / 'nope.h5')}),
          ConfigError, ['config.finetune.init_from', 'nope.h5', 'does not exist'], [tmp / 'run'])


def _keras_h5_missing_a_layer(tmp):
  model = models.create_model('cifar_resnet20')
  path = write_keras_weights_without(tmp / 'weights.h5', model, 'conv3_block2_2_bn')
  return (lambda: weights.load_keras_h5(path, model), WeightsError,
          ['weights.h5', "no layer 'conv3_block2_2_bn'", 'stage2_block2/bn2'], [path])


CASES = {
    'SIGNS directory missing': _signs_missing_dir,
    'SIGNS file is an HTML page (corrupt download)': _signs_html_page,
    'SIGNS file truncated': _signs_truncated,
    'SIGNS images of the wrong shape': _signs_wrong_shape,
    'SIGNS images of the wrong dtype': _signs_wrong_dtype,
    'SIGNS label out of range': _signs_label_out_of_range,
    'SIGNS empty split': _signs_empty_split,
    'SIGNS test file missing': _signs_one_file_missing,
    'CIFAR batch of the wrong size': _cifar_wrong_size,
    'CIFAR label out of range': _cifar_label_out_of_range,
    'CIFAR pickle that would run code': _cifar_pickle_runs_code,
    'CIFAR directory without batches': _cifar_no_batches,
    'in-memory split of the wrong dtype': _split_wrong_dtype,
    'in-memory labels beyond the class names': _dataset_labels_beyond_classes,
    'image size too small for the model': _image_too_small_for_model,
    'image size not the data\'s': _image_size_not_the_data,
    'num_classes not the data\'s': _num_classes_not_the_data,
    'batch size larger than the dataset': _batch_larger_than_data,
    'unknown model': _unknown_name('model.name', 'resnet51'),
    'unknown layout': _unknown_name('model.layout', 'kears'),
    'unknown optimizer': _unknown_name('optim.name', 'adamw'),
    'unknown dataset': _unknown_name('data.name', 'imagenet'),
    'negative learning rate': _negative_learning_rate,
    'infinite learning rate': _infinite_learning_rate,
    'checkpoint period of zero': _zero_checkpoint_period,
    'workdir under a regular file': _workdir_not_writable,
    'workdir of another model': _workdir_of_another_model,
    'workdir of the flat config layout': _workdir_of_the_flat_config_layout,
    'init_from file missing': _init_from_missing,
    'Keras h5 missing a layer': _keras_h5_missing_a_layer,
}


@pytest.mark.parametrize('name', CASES)
def test_bad_input_gives_a_typed_error_and_changes_no_file(name, tmp_path):
  action, error_type, fragments, watched = CASES[name](tmp_path)
  before = fh.file_hashes(*[p for p in watched if os.path.exists(p)])
  with pytest.raises(error_type) as info:
    action()
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, f'{fragment!r} not in: {message}'
  assert fh.file_hashes(*[p for p in watched if os.path.exists(p)]) == before


# ------------------------------------------------------------------ through the CLI


@pytest.mark.slow  # Eight subprocess runs of experiments/train.py.
def test_cli_reports_bad_input_in_one_line_and_exit_code(tmp_path):
  """Several train.py processes at once; each must fail cleanly without touching files."""
  earlier = earlier_run(str(tmp_path / 'earlier'),
                        signs_config(tmp_path, **{'model.name': 'resnet18'}))
  signs = write_signs(tmp_path / 'signs')
  with open(tmp_path / 'signs' / 'test_signs.h5', 'wb') as f:
    f.write(b'<html>404 Not Found</html>')
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  watched = [earlier, signs, blocker]
  before = fh.file_hashes(*watched)
  run = str(tmp_path / 'run')  # Each case gets its own workdir under it: the processes run at
  # once, and two of them on one workdir would meet the workdir claim instead of their error.
  cases = {
      'misspelled override': ([f'--workdir={run}', '--config.optim.learnin_rate=0.1'], 1,
                              ["'learnin_rate'", 'Did you mean "learning_rate"']),
      'override of the flat layout': ([f'--workdir={run}', '--config.learning_rate=0.1'], 1,
                                      ['bad --config override: learning_rate (fields are '
                                       'grouped now: optim.learning_rate)']),
      'override of the wrong type': ([f'--workdir={run}', '--config.train.batch_size=abc'], 1,
                                     ['--config.train.batch_size=abc',
                                      "invalid literal for int()"]),
      'unknown model': ([f'--workdir={run}', '--config.model.name=resnet51'], 1,
                        ["error: ConfigError: config.model.name='resnet51'"]),
      'unknown model, --debug': ([f'--workdir={run}', '--config.model.name=resnet51',
                                  '--debug'], 1,
                                 ['Traceback (most recent call last)', 'ConfigError']),
      'batch not divisible by 2 devices': ([f'--workdir={run}', '--config.train.batch_size=15'],
                                           2, ['config.train.batch_size=15 is not divisible by '
                                               'the 2 devices']),
      'workdir under a file': ([f'--workdir={blocker}/run'], 1, ['cannot be written']),
      'corrupt SIGNS file': ([f'--workdir={run}', '--config.data.name=signs',
                              f'--config.data.data_dir={signs}', '--config.model.name=resnet18',
                              '--config.data.image_size=64', '--config.model.num_classes=6'], 1,
                             ['test_signs.h5', 'HTML page']),
      'workdir of another model': ([f'--workdir={earlier}', '--config.model.name=resnet50',
                                    '--config.data.name=signs', '--config.data.image_size=64',
                                    '--config.model.num_classes=6'], 1,
                                   ["config.model.name: 'resnet18' there, 'resnet50' now"]),
  }
  processes = {}
  for name, (flags, devices, _) in cases.items():
    flags = [flag.replace(f'--workdir={run}', f'--workdir={run}/{name.replace(" ", "_")}')
             for flag in flags]
    command = [sys.executable, fh.TRAIN_SCRIPT, f'--config={fh.TINY_CONFIG}', *flags]
    processes[name] = subprocess.Popen(command, cwd=fh.REPO, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True,
                                       env=fh.subprocess_env(devices))
  for name, process in processes.items():
    stdout, stderr = process.communicate(timeout=180)
    fragments = cases[name][2]
    assert process.returncode != 0, (name, stdout, stderr)
    for fragment in fragments:
      assert fragment in stderr, (name, fragment, stderr[-3000:])
    if '--debug' not in cases[name][0]:
      assert 'Traceback' not in stderr and 'Traceback' not in stdout, (name, stderr[-3000:])
    if '--debug' not in cases[name][0] and 'override' not in name:  # Library errors:
      assert process.returncode == 2, (name, stderr[-3000:])
      assert stderr.count('error: ') == 1, (name, stderr[-3000:])
  assert fh.file_hashes(*watched) == before
  # Each workdir is gone; `run` itself may stay (empty) when two processes raced to make it.
  assert not os.path.exists(run) or not os.listdir(run), os.listdir(run)
