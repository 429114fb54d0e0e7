"""What may change when a run resumes: the saved config.json against the config of now.

Fields are compared by their dotted names ('optim.learning_rate'). A field that changes what
the run computes (everything not in config.FREE_ON_RESUME, which frees the `run` and `speed`
groups, data.cache_dir and, under conditions, the run's length and evaluation period: the
model, the data, the optimizer and its schedule, the batch size, the seed, ...) must keep
its saved value, or the steps before and after the resume would belong to different
experiments while the workdir says they are one. With config.run.allow_changes_on_resume
the run goes on with the new values, and `record_changes` appends the change (old and new
values, the step it took effect at and the whole previous config) to config_changes.jsonl.
"""
import json
import os
import time
from typing import Optional

import ml_collections

from resnet_jax import storage
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib

CHANGES_NAME = 'config_changes.jsonl'
_ABSENT = '<absent>'


def flat_fields(config: ml_collections.ConfigDict) -> dict:
  """{'data.augment.flip': value, ...}: every leaf field under its dotted name, as JSON
  values."""
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        visit(f'{name}.', value)
      else:
        flat[name] = storage.as_json(value)

  visit('', config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
  return flat


def _free(field: str, saved: dict, now: dict) -> bool:
  """Whether the dotted `field` may change on resume, given both flat configs."""
  if not config_lib.is_free_on_resume(field):
    return False
  if field in ('train.num_steps', 'train.num_epochs'):
    cosine = 'warmup_cosine'
    return saved.get('optim.schedule') != cosine and now.get('optim.schedule') != cosine
  if field == 'train.eval_every_epochs':
    return (not saved.get('train.bn_recompute_batches')
            and not now.get('train.bn_recompute_batches'))
  return True


def guarded_changes(saved: ml_collections.ConfigDict,
                    config: ml_collections.ConfigDict) -> dict:
  """{field: (saved value, value now)} for each field that may not change freely."""
  before, now = flat_fields(saved), flat_fields(config)
  return {field: (before.get(field, _ABSENT), value) for field, value in now.items()
          if before.get(field, _ABSENT) != value and not _free(field, before, now)}


def check_resume_config(workdir: str, saved: Optional[ml_collections.ConfigDict],
                        config: ml_collections.ConfigDict) -> dict:
  """The guarded changes a resumed run may make ({} when none); ConfigError naming each
  changed dotted field with its old and new value unless config.run.allow_changes_on_resume."""
  if saved is None:
    return {}
  changes = guarded_changes(saved, config)
  if changes and not config.run.allow_changes_on_resume:
    details = '; '.join(f'config.{field}: {old!r} there, {new!r} now'
                        for field, (old, new) in changes.items())
    raise ConfigError(
        f'workdir {workdir!r} holds a run with other settings ({details}); expected the '
        'saved values to continue it (they change what the run computes). Pass '
        '--config.run.allow_changes_on_resume=True to go on with the new values (the change is '
        f'recorded in {CHANGES_NAME}), or use a new --workdir.')
  return changes


def record_changes(workdir: str, step: int, changes: dict,
                   saved: ml_collections.ConfigDict) -> None:
  """Appends {'step', 'time', 'changes': {field: {'old', 'new'}}, 'previous_config'} to
  <workdir>/config_changes.jsonl (rewritten whole, atomically)."""
  path = os.path.join(workdir, CHANGES_NAME)
  old_text = ''
  if os.path.exists(path):
    with open(path) as f:
      old_text = f.read()
    if old_text and not old_text.endswith('\n'):
      old_text += '\n'
  record = {'step': int(step), 'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            'changes': {field: {'old': old, 'new': new} for field, (old, new) in changes.items()},
            'previous_config': saved.to_dict()}
  storage.write_text_atomic(path, old_text + json.dumps(storage.as_json(record)) + '\n')


def read_changes(workdir: str) -> list:
  """The records of config_changes.jsonl, oldest first ([] if none)."""
  path = os.path.join(workdir, CHANGES_NAME)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
