"""Resuming with a changed config: refused when the change alters what the run computes,
recorded when allowed, free for the fields that cannot change the result."""
import json
import os

import pytest

import helpers as fx
from _fault_helpers import file_hashes
from resnet_jax.errors import ConfigError
from resnet_jax.train import base_config, config_changes, loop


def _run(workdir, **overrides):
  return loop.train_and_evaluate(fx.fault_config(**overrides), str(workdir), model=fx.TinyNet(),
                                 dataset=fx.fault_dataset())


def test_fields_that_change_the_result_are_guarded_and_the_others_free():
  saved = base_config()
  now = base_config()
  now.learning_rate, now.seed, now.augment.flip = 0.5, 3, True
  now.log_every_steps, now.num_steps, now.progress_bar, now.keep_checkpoints = 7, 99, False, 9
  assert config_changes.guarded_changes(saved, now) == {
      'learning_rate': (1e-3, 0.5), 'seed': (0, 3), 'augment.flip': (False, True)}
  # The total steps shape the warmup_cosine schedule; evaluations shape the BN statistics
  # under bn_recompute_batches.
  saved.schedule = now.schedule = 'warmup_cosine'
  saved.bn_recompute_batches = now.bn_recompute_batches = 2
  now.eval_every_epochs = 3
  changed = config_changes.guarded_changes(saved, now)
  assert {'num_steps', 'eval_every_epochs'} <= set(changed)


def test_a_field_missing_from_the_allow_list_is_guarded(monkeypatch):
  saved, now = base_config(), base_config()
  now.tensorboard = False
  assert config_changes.guarded_changes(saved, now) == {}
  monkeypatch.setattr('resnet_jax.train.config.FREE_ON_RESUME', ('log_every_steps',))
  assert config_changes.guarded_changes(saved, now) == {'tensorboard': (True, False)}


@pytest.mark.slow  # Training runs.
def test_a_changed_config_on_resume_is_refused_or_recorded(tmp_path):
  workdir = str(tmp_path / 'run')
  _run(workdir, num_steps=4)

  before = file_hashes(workdir)
  with pytest.raises(ConfigError, match=r"learning_rate: 0\.01 there, 0\.02 now; "
                     r"optimizer: 'adam' there, 'sgd' now.*allow_changes_on_resume"):
    _run(workdir, num_steps=8, learning_rate=0.02, optimizer='sgd')
  assert file_hashes(workdir) == before  # Nothing changed.

  # Extending the run and logging differently cannot change what it computes.
  result = _run(workdir, num_steps=8, log_every_steps=4, keep_checkpoints=5)
  assert result['resumed_from'] == 4 and result['step'] == 8
  assert config_changes.read_changes(workdir) == []

  result = _run(workdir, num_steps=12, log_every_steps=4, learning_rate=0.02,
                allow_changes_on_resume=True)
  assert result['resumed_from'] == 8 and result['step'] == 12
  [change] = config_changes.read_changes(workdir)
  assert change['step'] == 8
  assert change['changes'] == {'learning_rate': {'old': 0.01, 'new': 0.02}}
  assert change['previous_config']['learning_rate'] == 0.01
  assert change['previous_config']['num_steps'] == 8
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['learning_rate'] == 0.02  # What the run uses from step 8 on.

  # The recorded change is now the run's config: the same command goes on without a word.
  result = _run(workdir, num_steps=12, log_every_steps=4, learning_rate=0.02)
  assert result['step'] == 12 and len(config_changes.read_changes(workdir)) == 1
