"""Resuming with a changed config: refused when the change alters what the run computes,
recorded when allowed, free for the fields that cannot change the result; a workdir of the
earlier flat config layout is refused as such."""
import json
import os

import pytest

import helpers as fx
from _fault_helpers import file_hashes
from resnet_jax.errors import ConfigError
from resnet_jax.train import base_config, config_changes, loop
from resnet_jax.train.inference import load_predictor
from resnet_jax.train.workdir import load_saved_config


def _run(workdir, **overrides):
  return loop.train_and_evaluate(fx.fault_config(**overrides), str(workdir), model=fx.TinyNet(),
                                 dataset=fx.fault_dataset())


def test_fields_that_change_the_result_are_guarded_and_the_others_free():
  saved = base_config()
  now = base_config()
  now.optim.learning_rate, now.train.seed, now.data.augment.flip = 0.5, 3, True
  now.run.log_every_steps, now.train.num_steps = 7, 99
  now.run.progress_bar, now.run.keep_checkpoints = False, 9
  now.speed.data_workers, now.speed.steps_per_dispatch, now.speed.crop_resize = 4, 1, 'host'
  now.data.cache_dir = '/elsewhere'
  assert config_changes.guarded_changes(saved, now) == {
      'optim.learning_rate': (1e-3, 0.5), 'train.seed': (0, 3),
      'data.augment.flip': (False, True)}
  # The total steps shape the warmup_cosine schedule; evaluations shape the BN statistics
  # under bn_recompute_batches.
  saved.optim.schedule = now.optim.schedule = 'warmup_cosine'
  saved.train.bn_recompute_batches = now.train.bn_recompute_batches = 2
  now.train.eval_every_epochs = 3
  changed = config_changes.guarded_changes(saved, now)
  assert {'train.num_steps', 'train.eval_every_epochs'} <= set(changed)
  assert not any(field.startswith(('run.', 'speed.')) for field in changed)


def test_a_field_missing_from_the_allow_list_is_guarded(monkeypatch):
  saved, now = base_config(), base_config()
  now.run.tensorboard = False
  assert config_changes.guarded_changes(saved, now) == {}
  monkeypatch.setattr('resnet_jax.train.config.FREE_ON_RESUME', ('run.log_every_steps',))
  assert config_changes.guarded_changes(saved, now) == {'run.tensorboard': (True, False)}


def test_data_changes_name_each_class_by_index_and_compare_known_identities():
  record = {'class_names': ['bird', 'cat', 'dog'], 'identity': 'sha256:1', 'source': 'a'}
  renamed = dict(record, class_names=['bird', 'dog', 'zebra'], identity='sha256:2')
  assert config_changes.data_changes([record], dict(record, source='elsewhere')) == (None, {})
  before, changes = config_changes.data_changes([record], renamed)
  assert before is record and changes == {
      'trained_on.class_names': (['bird', 'cat', 'dog'], ['bird', 'dog', 'zebra']),
      'trained_on.identity': ('sha256:1', 'sha256:2')}
  assert config_changes.class_changes(*changes['trained_on.class_names']) == (
      "class 1: 'cat' there, 'dog' now; class 2: 'dog' there, 'zebra' now")
  assert config_changes.class_changes(['a'], ['a', 'b', 'c'], ('old', 'new'), limit=1) == (
      "class 1: - old, 'b' new; 1 more")
  # Where either side states no identity (a source that cannot), only the names count.
  assert config_changes.data_changes([dict(record, identity=None)], renamed)[1].keys() == {
      'trained_on.class_names'}
  assert config_changes.data_changes([record], dict(record, identity=None)) == (None, {})
  # A run saved before config.json recorded its data: each checkpoint's classes in turn.
  old = [{'class_names': ['bird', 'cat', 'dog']}, {'class_names': ['bird', 'dog', 'zebra']}]
  assert config_changes.data_changes(old, renamed)[0] is old[0]

  saved, now = base_config(), base_config()
  with pytest.raises(ConfigError) as info:
    config_changes.check_resume_config('w', saved, now, [record], renamed)
  assert str(info.value).startswith(
      "workdir 'w' holds a run trained on other data: class names: class 1: 'cat' there, "
      "'dog' now; class 2: 'dog' there, 'zebra' now (its classes would train under other "
      "labels); expected the data it trained on to continue it"), str(info.value)
  now.run.allow_changes_on_resume = True
  assert set(config_changes.check_resume_config('w', saved, now, [record], renamed)) == {
      'trained_on.class_names', 'trained_on.identity'}


# base_config() of the earlier flat layout, as its runs saved it (a few of its 48 fields).
FLAT_CONFIG = {'model': 'resnet50', 'layout': 'coursera', 'num_classes': 3, 'dataset': 'signs',
               'image_size': 8, 'learning_rate': 0.01, 'batch_size': 8, 'data_on_device': True,
               'augment': {'crop_padding': 0, 'flip': False, 'inception_crop': False,
                           'crop_resize': 'auto'}}


def test_a_workdir_of_the_flat_config_layout_is_refused_as_such(tmp_path):
  workdir = tmp_path / 'old_run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(FLAT_CONFIG, indent=2))
  before = file_hashes(str(workdir))
  for attempt in (lambda: _run(workdir), lambda: load_predictor(str(workdir)),
                  lambda: load_saved_config(str(workdir))):
    with pytest.raises(ConfigError) as info:
      attempt()
    message = str(info.value)
    assert 'earlier flat config layout' in message and 'new --workdir' in message, message
    assert 'there,' not in message  # Not a list of every field as "changed".
  assert file_hashes(str(workdir)) == before


@pytest.mark.slow  # Training runs.
def test_a_changed_config_on_resume_is_refused_or_recorded(tmp_path):
  workdir = str(tmp_path / 'run')
  _run(workdir, **{'train.num_steps': 4})

  before = file_hashes(workdir)
  with pytest.raises(ConfigError, match=r"config\.optim\.learning_rate: 0\.01 there, 0\.02 now; "
                     r"config\.optim\.name: 'adam' there, 'sgd' now.*allow_changes_on_resume"):
    _run(workdir, **{'train.num_steps': 8, 'optim.learning_rate': 0.02, 'optim.name': 'sgd'})
  assert file_hashes(workdir) == before  # Nothing changed.

  # Extending the run, logging and going faster differently cannot change what it computes.
  result = _run(workdir, **{'train.num_steps': 8, 'run.log_every_steps': 4,
                            'run.keep_checkpoints': 5, 'speed.data_workers': 2,
                            'speed.steps_per_dispatch': 1})
  assert result['resumed_from'] == 4 and result['step'] == 8
  assert config_changes.read_changes(workdir) == []

  result = _run(workdir, **{'train.num_steps': 12, 'run.log_every_steps': 4,
                            'optim.learning_rate': 0.02, 'run.allow_changes_on_resume': True})
  assert result['resumed_from'] == 8 and result['step'] == 12
  [change] = config_changes.read_changes(workdir)
  assert change['step'] == 8
  assert change['changes'] == {'optim.learning_rate': {'old': 0.01, 'new': 0.02}}
  assert change['previous_config']['optim']['learning_rate'] == 0.01
  assert change['previous_config']['train']['num_steps'] == 8
  with open(os.path.join(workdir, 'config.json')) as f:
    # What the run uses from step 8 on.
    assert json.load(f)['optim']['learning_rate'] == 0.02

  # The recorded change is now the run's config: the same command goes on without a word.
  result = _run(workdir, **{'train.num_steps': 12, 'run.log_every_steps': 4,
                            'optim.learning_rate': 0.02})
  assert result['step'] == 12 and len(config_changes.read_changes(workdir)) == 1
