"""The work directory of a run: writable, and bound to one model by its saved config.json."""
import json
import os
import tempfile

import jax
import ml_collections

from resnet_jax import storage
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib

CONFIG_NAME = 'config.json'


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


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Saves the config as config.json; called once every check has passed, so that a run
  that fails at the start leaves an earlier run's config.json as it was."""
  if jax.process_index() == 0:
    storage.write_text_atomic(os.path.join(workdir, CONFIG_NAME),
                              config.to_json_best_effort(indent=2))


def load_saved_config(workdir: str, required: bool = True):
  """The config a run saved in `workdir`, as a ConfigDict (None if absent and not required).

  Fields added to base_config since that run keep their defaults. ConfigError if the file
  cannot be read, or holds the earlier flat layout (config_lib.check_grouped).
  """
  path = os.path.join(workdir, CONFIG_NAME)
  if not os.path.exists(path):
    if required:
      raise ConfigError(f'workdir {workdir!r} has no {CONFIG_NAME}; expected the workdir of a '
                        'training run (experiments/train.py writes it at start)')
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
  config_lib.check_grouped(values, repr(path))
  return ml_collections.ConfigDict(_merged(config_lib.base_config().to_dict(), values))


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
