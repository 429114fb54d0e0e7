"""What may change when a run resumes: the saved config.json against the config of now.

Fields are compared by their dotted names ('optim.learning_rate'). A field that changes what
the run computes (everything not in config.FREE_ON_RESUME, which frees the `run` and `speed`
groups, data.cache_dir and, under conditions, the run's length and evaluation period: the
model, the data, the optimizer and its schedule, the batch size, the seed, ...) must keep
its saved value, or the steps before and after the resume would belong to different
experiments while the workdir says they are one. With config.run.allow_changes_on_resume
the run goes on with the new values, and `record_changes` appends the change (old and new
values, the step it took effect at and the whole previous config) to config_changes.jsonl.

The data are guarded the same way (`data_changes`): a resumed run's class names must be
those the run trained on, in the same order (a renamed, added or removed class folder
shifts the labels of the classes after it), and its data's identity the one config.json
records (shards prepared again, a folder changed, synthetic SIGNS where real ones were),
where both state one. They appear as the fields trained_on.class_names and
trained_on.identity (workdir.DATA_KEY).
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
CLASS_NAMES_FIELD = 'trained_on.class_names'
IDENTITY_FIELD = 'trained_on.identity'


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


def class_changes(before, now, labels: tuple = ('there', 'now'), limit: int = 4) -> str:
  """"class 1: 'cat' there, 'dog' now; ...": each index whose class name differs (the first
  `limit`, then how many more), '-' where a list has no such index; `labels` say where each
  list comes from."""
  def name(names, index):
    return repr(names[index]) if index < len(names) else '-'

  differ = [f'class {i}: {name(before, i)} {labels[0]}, {name(now, i)} {labels[1]}'
            for i in range(max(len(before), len(now))) if name(before, i) != name(now, i)]
  more = f'; {len(differ) - limit} more' if len(differ) > limit else ''
  return '; '.join(differ[:limit]) + more


def data_changes(recorded: list, now: dict) -> tuple[Optional[dict], dict]:
  """(the record, {field: (recorded value, value now)}) of the first record of `recorded`
  (workdir.recorded_data) that differs from the data of now (workdir.data_record) in its
  class names, or in its identity where both state one; (None, {}) when none does."""
  for before in recorded:
    changes = {}
    if list(before['class_names']) != list(now['class_names']):
      changes[CLASS_NAMES_FIELD] = (list(before['class_names']), list(now['class_names']))
    identities = before.get('identity'), now.get('identity')
    if None not in identities and identities[0] != identities[1]:
      changes[IDENTITY_FIELD] = identities
    if changes:
      return before, changes
  return None, {}


def _describe_data(changes: dict, before: dict, now: dict) -> str:
  """The data part of a refusal: the class names that changed, or else the same names on
  data of another identity, with where each came from."""
  if CLASS_NAMES_FIELD in changes:
    return (f'class names: {class_changes(*changes[CLASS_NAMES_FIELD])} (its classes would '
            'train under other labels)')
  old, new = changes[IDENTITY_FIELD]
  return (f'the same class names, other images (identity {_short(old)} of '
          f'{before.get("source")!r} there, {_short(new)} of {now.get("source")!r} now)')


def _short(identity: str) -> str:
  return identity if len(identity) <= 24 else identity[:24] + '...'


def check_resume_config(workdir: str, saved: Optional[ml_collections.ConfigDict],
                        config: ml_collections.ConfigDict, recorded_data: list = (),
                        data_now: Optional[dict] = None) -> dict:
  """The guarded changes a resumed run may make ({} when none); ConfigError naming each
  changed dotted field with its old and new value, and a change of the data (`data_changes`
  of `recorded_data` against `data_now`: class names by index, old and new), unless
  config.run.allow_changes_on_resume."""
  if saved is None:
    return {}
  changes = guarded_changes(saved, config)
  before, data = data_changes(recorded_data, data_now) if data_now is not None else (None, {})
  if (changes or data) and not config.run.allow_changes_on_resume:
    found, expected = [], []
    if changes:
      details = '; '.join(f'config.{field}: {old!r} there, {new!r} now'
                          for field, (old, new) in changes.items())
      found.append(f'with other settings ({details})')
      expected.append('the saved values')
    if data:
      found.append(f'trained on other data: {_describe_data(data, before, data_now)}')
      expected.append('the data it trained on')
    raise ConfigError(
        f'workdir {workdir!r} holds a run {" and ".join(found)}; expected '
        f'{" and ".join(expected)} to continue it (they change what the run computes). Pass '
        '--config.run.allow_changes_on_resume=True to go on with the new values (the change is '
        f'recorded in {CHANGES_NAME}), or use a new --workdir.')
  return dict(changes, **data)


def record_changes(workdir: str, step: int, changes: dict,
                   saved: ml_collections.ConfigDict, previous_data: Optional[dict] = None) -> None:
  """Appends {'step', 'time', 'changes': {field: {'old', 'new'}}, 'previous_config'} (and
  'previous_data', the record of the data before, where given) to
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
  if previous_data is not None:
    record['previous_data'] = previous_data
  storage.write_text_atomic(path, old_text + json.dumps(storage.as_json(record)) + '\n')


def read_changes(workdir: str) -> list:
  """The records of config_changes.jsonl, oldest first ([] if none)."""
  path = os.path.join(workdir, CHANGES_NAME)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
