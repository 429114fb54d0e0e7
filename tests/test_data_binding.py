"""A run is bound to its data, and a start that fails leaves no trace.

Resume compares the data of now with those config.json records (class names by index,
and the data's identity): a change is refused by name under the guard of other config
changes, and recorded when allowed. Predictions refuse a checkpoint whose classes are not
the run's. A run that fails before its first chunk of steps is done (an undecodable image,
a metric writer that cannot open, non-finite first steps) leaves a new workdir absent and a
resumed one as it was.
"""
import errno
import json
import os
import shutil
import subprocess
import sys

import image_folders
import pytest

import _fault_helpers as fh
import helpers as fx
from resnet_jax.data.types import Dataset
from resnet_jax.errors import CheckpointError, ConfigError, DatasetError, NonFiniteLossError
from resnet_jax.train import (
  checkpoint as checkpoint_lib,
  config_changes,
  inference,
  loop,
  metrics as metrics_lib,
)

DATA_KEY = 'trained_on'  # config.json's record of the run's data.
CLASS_NAMES_FIELD, IDENTITY_FIELD = f'{DATA_KEY}.class_names', f'{DATA_KEY}.identity'


def _run(workdir, dataset=None, **overrides):
  return loop.train_and_evaluate(fx.fault_config(**overrides), str(workdir), model=fx.TinyNet(),
                                 dataset=dataset or fx.fault_dataset())


def _renamed(dataset, class_names):
  """The same images and labels under other class names."""
  return Dataset(dataset.train, dataset.test, tuple(class_names), 'renamed test data')


def _run_files(workdir) -> dict:
  """{path: sha256} of what a run keeps: config.json, metrics and checkpoints (not .lock,
  which holds the PID of the last process that locked the workdir)."""
  return {path: digest for path, digest in fh.file_hashes(str(workdir)).items()
          if os.path.basename(path) != '.lock'}


def _check_latest(workdir):
  """What inference.load_predictor checks of the latest checkpoint's classes (the runs here
  train a module that load_predictor cannot rebuild from config.json)."""
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=1, read_only=True)
  try:
    step = checkpointer.latest_step()
    names = fh.read_checkpoint(workdir, step, workdir.parent)[1]['class_names']
    inference.check_classes(str(workdir), checkpointer, step, names)
    return names
  finally:
    checkpointer.close()


def _saved(workdir) -> dict:
  with open(os.path.join(str(workdir), 'config.json')) as f:
    return json.load(f)


@pytest.mark.slow  # Training runs.
def test_a_changed_class_list_is_refused_by_name_then_allowed_and_recorded(tmp_path):
  workdir = tmp_path / 'run'
  _run(workdir, **{'train.num_steps': 4})
  assert _saved(workdir)[DATA_KEY]['class_names'] == ['a', 'b', 'c']
  renamed = _renamed(fx.fault_dataset(), 'azc')

  before = _run_files(workdir)
  with pytest.raises(ConfigError) as info:
    _run(workdir, renamed, **{'train.num_steps': 8})
  message = str(info.value)
  assert ("holds a run trained on other data: class names: class 1: 'b' there, 'z' now" in
          message), message
  assert 'allow_changes_on_resume=True' in message and "class 0" not in message
  assert _run_files(workdir) == before

  result = _run(workdir, renamed, **{'train.num_steps': 8, 'run.allow_changes_on_resume': True})
  assert result['resumed_from'] == 4 and result['step'] == 8
  [change] = config_changes.read_changes(workdir)
  assert change['step'] == 4
  assert change['changes'][CLASS_NAMES_FIELD] == {
      'old': ['a', 'b', 'c'], 'new': ['a', 'z', 'c']}
  assert change['previous_data']['class_names'] == ['a', 'b', 'c']
  assert _saved(workdir)[DATA_KEY]['class_names'] == ['a', 'z', 'c']
  assert _check_latest(workdir) == ['a', 'z', 'c']
  # The run goes on with its new classes without a word.
  assert _run(workdir, renamed, **{'train.num_steps': 10})['step'] == 10

  # A checkpoint from before the change would name its predictions by the old list.
  for step in (8, 10):
    shutil.rmtree(os.path.join(fh.checkpoint_dir(workdir), str(step)))
  with pytest.raises(CheckpointError) as info:
    _check_latest(workdir)
  message = str(info.value)
  assert ("(step 4) predicts other classes than the run trains on (class 1: 'b' in the "
          "checkpoint, 'z' in config.json)" in message), message


@pytest.mark.slow  # Training runs.
def test_the_same_classes_on_other_images_are_refused_too(tmp_path):
  workdir = tmp_path / 'run'
  _run(workdir, **{'train.num_steps': 4})
  identity = _saved(workdir)[DATA_KEY]['identity']
  other = Dataset(fx.make_split(48, 5), fx.make_split(12, 6), tuple('abc'), 'other test data')
  before = _run_files(workdir)
  with pytest.raises(ConfigError) as info:
    _run(workdir, other, **{'train.num_steps': 8})
  message = str(info.value)
  assert (f"the same class names, other images (identity {identity[:24]}... of 'in-memory "
          "test data' there" in message), message
  assert "of 'other test data' now" in message
  assert _run_files(workdir) == before
  _run(workdir, other, **{'train.num_steps': 8, 'run.allow_changes_on_resume': True})
  [change] = config_changes.read_changes(workdir)
  assert set(change['changes']) == {IDENTITY_FIELD}
  assert _saved(workdir)[DATA_KEY]['source'] == 'other test data'


@pytest.mark.slow  # Training runs.
def test_a_workdir_saved_before_runs_recorded_their_data(tmp_path):
  """Such a run resumes on its data, and its checkpoints' class names stand for the record:
  a resume that changed them silently (as before the record) is found in them."""
  workdir = tmp_path / 'run'
  _run(workdir, **{'train.num_steps': 4})

  def forget_the_data():
    values = _saved(workdir)
    del values[DATA_KEY]
    (workdir / 'config.json').write_text(json.dumps(values, indent=2))

  forget_the_data()
  assert _run(workdir, **{'train.num_steps': 6})['resumed_from'] == 4
  assert _saved(workdir)[DATA_KEY]['class_names'] == ['a', 'b', 'c']  # Recorded now.

  # What a resume on renamed classes left before they were checked: no record, no change.
  renamed = _renamed(fx.fault_dataset(), 'azc')
  _run(workdir, renamed, **{'train.num_steps': 8, 'run.allow_changes_on_resume': True})
  forget_the_data()
  os.remove(workdir / 'config_changes.jsonl')
  with pytest.raises(ConfigError, match="class 1: 'b' there, 'z' now"):
    _run(workdir, renamed, **{'train.num_steps': 10})
  with pytest.raises(CheckpointError) as info:
    _check_latest(workdir)
  message = str(info.value)
  assert ("(step 8) was trained across a change of the class list (class 1: 'b' at step 6, "
          "'z' at step 8)" in message), message


def _bad_folder_config(data_dir, **overrides):
  """TinyNet on a raw folder of 4 classes x 3 training pictures, the whole split one batch
  (so the first step reads every picture)."""
  return fx._config({'data.name': 'images', 'data.data_dir': str(data_dir),
                     'model.num_classes': 4, 'train.batch_size': 12, 'train.num_steps': 1,
                     'run.log_every_steps': 1, 'run.checkpoint_every_steps': 1, **overrides})


def _spoil(folder) -> str:
  """Overwrites one training picture of `folder` with bytes no decoder reads; its path."""
  directory = os.path.join(folder, 'train', image_folders.CLASSES[1])
  path = os.path.join(directory, sorted(os.listdir(directory))[0])
  with open(path, 'wb') as f:
    f.write(b'this is a text file, not a picture\n')
  return path


@pytest.mark.slow  # Training runs.
def test_an_undecodable_picture_leaves_no_workdir_and_a_resumed_one_as_it_was(tmp_path):
  folder = tmp_path / 'pictures'
  image_folders.write_image_folder(folder, per_class=3, val_per_class=1)
  workdir = tmp_path / 'runs' / 'run'
  run = lambda **o: loop.train_and_evaluate(  # noqa: E731
      _bad_folder_config(folder, **o), str(workdir), model=fx.TinyNet(num_classes=4))
  run()
  before = _run_files(workdir)
  bad = _spoil(folder)
  # Allowed changes, so that whatever the data's identity says, the first batch is read.
  with pytest.raises(DatasetError, match=os.path.basename(bad)):
    run(**{'train.num_steps': 2, 'run.allow_changes_on_resume': True})
  assert _run_files(workdir) == before

  shutil.rmtree(tmp_path / 'runs')
  with pytest.raises(DatasetError, match=os.path.basename(bad)):
    run()
  assert not os.path.exists(tmp_path / 'runs')


@pytest.mark.slow  # Training runs.
def test_a_metric_writer_that_cannot_open_leaves_no_workdir_and_a_resumed_one_as_it_was(
    tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  _run(workdir, **{'train.num_steps': 4})
  # A line past the last checkpoint, as a run killed after it leaves: a resume drops it.
  with open(workdir / metrics_lib.JSONL_NAME, 'a') as f:
    f.write('{"step": 6, "train_loss": 1.0}\n')
  before = _run_files(workdir)

  def no_space(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(metrics_lib.MetricWriter, '__init__', no_space)
  with pytest.raises(OSError, match='No space left'):
    _run(workdir, **{'train.num_steps': 8, 'run.allow_changes_on_resume': True,
                     'optim.learning_rate': 0.02})
  assert _run_files(workdir) == before

  fresh = tmp_path / 'new' / 'run'
  with pytest.raises(OSError, match='No space left'):
    _run(fresh)
  assert not os.path.exists(tmp_path / 'new')


def test_a_first_chunk_that_is_not_finite_leaves_no_workdir(tmp_path):
  workdir = tmp_path / 'new' / 'run'
  with pytest.raises(NonFiniteLossError, match='training step 1'):
    loop.train_and_evaluate(fx.fault_config(), str(workdir), model=fx.TinyNet(poison=True),
                            dataset=fx.fault_dataset(poison_index=range(fx.FAULT_NUM_TRAIN)))
  assert not os.path.exists(tmp_path / 'new')


@pytest.mark.slow  # Four subprocess runs.
def test_train_py_refuses_a_renamed_class_folder_in_one_line(tmp_path):
  """End to end: train on a folder, rename a class folder, rerun with more steps."""
  folder = tmp_path / 'pictures'
  image_folders.write_image_folder(folder, per_class=8, val_per_class=2, size=(12, 12))
  workdir = str(tmp_path / 'run')
  flags = ['--config.data.name=images', f'--config.data.data_dir={folder}',
           '--config.model.name=cifar_resnet8', '--config.model.num_classes=4',
           '--config.train.num_steps=2']  # The smallest net: it compiles fastest.
  first = fh.run_train(workdir, *flags)
  assert first.returncode == 0, first.stderr[-3000:]
  before = _run_files(workdir)
  for split in ('train', 'val'):
    os.rename(folder / split / 'green_bars', folder / split / 'zebra')

  again = fh.run_train(workdir, *flags, '--config.train.num_steps=4')
  assert again.returncode == 2, again.stderr[-3000:]
  lines = again.stderr.strip().splitlines()
  assert lines[-1].startswith(f"error: ConfigError: workdir {workdir!r} holds a run trained on "
                              "other data: class names: class 1: 'green_bars' there, "
                              "'red_square' now; class 2: 'red_square' there, 'yellow_cross' "
                              "now; class 3: 'yellow_cross' there, 'zebra' now"), lines[-1]
  assert 'Traceback' not in again.stderr
  assert _run_files(workdir) == before

  allowed = fh.run_train(workdir, *flags, '--config.train.num_steps=4',
                         '--config.run.allow_changes_on_resume=True')
  assert allowed.returncode == 0, allowed.stderr[-3000:]
  assert 'resumed from: step 2' in allowed.stdout
  [change] = config_changes.read_changes(workdir)
  assert change['changes'][CLASS_NAMES_FIELD]['new'][3] == 'zebra'
  predicted = subprocess.run(
      [sys.executable, os.path.join(fh.REPO, 'experiments', 'predict.py'),
       f'--workdir={workdir}', '--checkpoint=latest',
       str(next((folder / 'val' / 'zebra').iterdir()))],
      cwd=fh.REPO, capture_output=True, text=True, env=fh.subprocess_env(), timeout=120)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  listing = predicted.stdout.splitlines()[-1].split('[')[1]  # The classes, most probable first.
  assert 'zebra:' in listing and 'green_bars' not in listing, predicted.stdout
