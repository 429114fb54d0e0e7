"""The work directory of a run: writable, and bound to one model and its data by config.json.

config.json holds the run's config, grouped as base_config is, and one more top-level
entry, DATA_KEY ('trained_on'): the data the run trains on (their class names, their
identity from resnet_jax.data.types.dataset_identity, and where they came from), which a
resumed run and predictions compare with the data and the checkpoints of now. Runs saved
before the entry existed have none; their checkpoints still name their classes.
"""
import contextlib
import json
import os
import tempfile
from typing import Optional

import jax
import ml_collections

from resnet_jax import storage
from resnet_jax.data.types import dataset_identity
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib, config_changes, metrics as metrics_lib

CONFIG_NAME = 'config.json'
DATA_KEY = 'trained_on'


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` and checks it is writable (`save_config` writes config.json later).

  A workdir whose saved config differs in a model-defining field (MODEL_FIELDS) holds
  another experiment: refuse it rather than mixing checkpoints and metrics. So does one whose
  config.json has the earlier flat layout (ConfigError saying so).
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    handle, probe = tempfile.mkstemp(dir=workdir, prefix='.write-probe-')
    os.close(handle)
    os.remove(probe)
  except OSError as error:
    raise ConfigError(f'workdir {workdir!r} cannot be written ({error.strerror or error}); '
                      'expected a directory this process can create files in') from error
  saved = load_saved_config(workdir, required=False)
  if saved is not None:
    before = config_lib.model_fields(saved)
    now = config_lib.model_fields(config)
    changed = [k for k in config_lib.MODEL_FIELDS
               if storage.as_json(before[k]) != storage.as_json(now[k])]
    if changed:
      details = ', '.join(f'config.{k}: {before[k]!r} there, {now[k]!r} now' for k in changed)
      raise ConfigError(
          f'workdir {workdir!r} holds a run of another model ({details}); expected the same '
          f'{", ".join(changed)} to continue it. Use a new --workdir for a new experiment.')


def save_config(workdir: str, config: ml_collections.ConfigDict,
                data: Optional[dict] = None) -> None:
  """Saves the config as config.json, with `data` (a `data_record`) under DATA_KEY; called
  once the run has started (its first steps done), so that a run that fails at the start
  leaves an earlier run's config.json as it was."""
  if jax.process_index() == 0:
    values = json.loads(config.to_json_best_effort())
    if data is not None:
      values[DATA_KEY] = storage.as_json(data)
    storage.write_text_atomic(os.path.join(workdir, CONFIG_NAME), json.dumps(values, indent=2))


@contextlib.contextmanager
def start_writes(workdir: str, config: ml_collections.ConfigDict, data: dict, start: int,
                 change: Optional[tuple] = None):
  """Context manager: what a run writes into its workdir once it has started (process 0
  only), undone if the block raises (the files' earlier bytes put back, new ones removed).

  The writes: a change of its config or data (`change`: config_changes.check_resume_config's
  changes, the saved config and the data record before) to config_changes.jsonl,
  config.json with `data` (a `data_record`), and metrics.jsonl cut back to `start`, the step
  it resumed from (a run killed after its last checkpoint wrote lines past it). The block
  opens what the run writes next (its metric writer).
  """
  if jax.process_index() != 0:
    yield
    return
  paths = [os.path.join(workdir, name) for name in
           (config_changes.CHANGES_NAME, CONFIG_NAME, metrics_lib.JSONL_NAME)]
  before = {path: _read_bytes(path) for path in paths}
  try:
    if change is not None:
      config_changes.record_changes(workdir, start, *change)
    save_config(workdir, config, data)
    metrics_lib.truncate_jsonl(paths[2], start)
    yield
  except BaseException:
    for path, content in before.items():
      try:
        if content is None:
          os.remove(path)
        elif _read_bytes(path) != content:
          storage.write_bytes_atomic(path, content)
      except OSError:
        pass  # Absent already, or the disk refuses: the error being raised says why.
    raise


def _read_bytes(path: str) -> Optional[bytes]:
  try:
    with open(path, 'rb') as f:
      return f.read()
  except FileNotFoundError:
    return None


def data_record(dataset) -> dict:
  """What config.json records of a run's data (a resnet_jax.data.Dataset): its class names,
  identity (None where the source states none) and source note."""
  return {'class_names': [str(name) for name in dataset.class_names],
          'identity': dataset_identity(dataset), 'source': dataset.source}


def load_data_record(workdir: str) -> Optional[dict]:
  """The `data_record` config.json holds (None for a run saved before runs recorded their
  data, or a workdir without config.json); ConfigError if it is malformed."""
  values = _read_saved(workdir)
  if values is None or DATA_KEY not in values:
    return None
  record = values[DATA_KEY]
  names = record.get('class_names') if isinstance(record, dict) else None
  if not (isinstance(names, list) and all(isinstance(name, str) for name in names)
          and isinstance(record.get('identity'), (str, type(None)))):
    raise ConfigError(f'{os.path.join(workdir, CONFIG_NAME)!r}: {DATA_KEY} holds '
                      f'{str(record)[:200]}; expected an object with class_names (a list of '
                      'names) and identity (a string or null), as a training run writes it')
  return record


def checkpoint_class_names(checkpointer) -> dict:
  """{step: class names or None} of every checkpoint of `checkpointer` (a
  train.checkpoint.Checkpointer), read from their metadata alone (no arrays): None where a
  checkpoint's metadata cannot be read or names no classes."""
  found = {}
  for step in checkpointer.all_steps():
    try:
      with open(os.path.join(checkpointer.path(step), 'meta', 'metadata')) as f:
        names = json.load(f).get('class_names')
    except (OSError, ValueError, AttributeError):
      names = None
    found[step] = [str(n) for n in names] if isinstance(names, list) else None
  return found


def recorded_data(workdir: str, checkpointer) -> list:
  """The data records a resumed run's data must match: config.json's, or for a run saved
  before config.json recorded its data, the class names of each of its checkpoints (oldest
  first; 'source' names the checkpoint)."""
  record = load_data_record(workdir)
  if record is not None:
    return [record]
  return [{'class_names': names, 'identity': None, 'source': f'checkpoint {checkpointer.path(s)}'}
          for s, names in sorted(checkpoint_class_names(checkpointer).items())
          if names is not None]


def load_saved_config(workdir: str, required: bool = True):
  """The config a run saved in `workdir`, as a ConfigDict (None if absent and not required).

  Fields added to base_config since that run keep their defaults. ConfigError if the file
  cannot be read, or holds the earlier flat layout (config_lib.check_grouped).
  """
  values = _read_saved(workdir)
  if values is None:
    if required:
      raise ConfigError(f'workdir {workdir!r} has no {CONFIG_NAME}; expected the workdir of a '
                        'training run (experiments/train.py writes it at start)')
    return None
  values = {key: value for key, value in values.items() if key != DATA_KEY}
  config_lib.check_grouped(values, repr(os.path.join(workdir, CONFIG_NAME)))
  return ml_collections.ConfigDict(_merged(config_lib.base_config().to_dict(), values))


def _read_saved(workdir: str) -> Optional[dict]:
  """config.json's object (None if there is none); ConfigError if it is not one."""
  path = os.path.join(workdir, CONFIG_NAME)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, json.JSONDecodeError) as error:
    raise ConfigError(f'{path!r} cannot be read as JSON ({error}); expected the config a '
                      'training run saved') from error
  if not isinstance(values, dict):
    raise ConfigError(f'{path!r} holds a JSON {type(values).__name__}; expected the config '
                      'a training run saved (an object of groups)')
  return values


def _merged(defaults: dict, saved: dict) -> dict:
  """`defaults` with every value of `saved` in its place (nested groups merged, JSON lists
  back to tuples): fields added after the run keep their defaults."""
  merged = dict(defaults)
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = _merged(merged[key], value)
    else:
      merged[key] = tuple(value) if isinstance(value, list) else value
  return merged
