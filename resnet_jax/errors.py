"""Typed errors. Each message names the file or field, what was found and what was expected."""


class ResNetJaxError(Exception):
  """Base of every error this library raises on purpose."""


class ConfigError(ResNetJaxError, ValueError):
  """A configuration field or a name (model, layout, optimizer, dataset) is wrong."""


class DatasetError(ResNetJaxError, ValueError):
  """A data file or directory is missing, malformed or inconsistent."""


class DamagedCacheError(DatasetError):
  """Data this library generated into its cache cannot be read back; regenerating fixes it."""


class BadImageError(DatasetError):
  """One image file cannot be used (undecodable, truncated, empty, not an image, too large).

  `path` is the file (None for bytes in memory) and `reason` says what was wrong with it, so
  that a converter can list the file and carry on.
  """

  def __init__(self, path: str | None, reason: str):
    self.path = path
    self.reason = reason
    where = repr(path) if path is not None else 'image bytes'
    super().__init__(f'{where}: {reason}; expected an image file that Pillow can decode')

  def __reduce__(self):  # Crosses process boundaries (worker pools) with its fields.
    return type(self), (self.path, self.reason)


class WeightsError(ResNetJaxError, ValueError):
  """A pretrained-weights file does not fit the model it is loaded into."""


class CheckpointError(ResNetJaxError):
  """A checkpoint cannot be restored into this run (wrong model, broken files)."""


class NonFiniteLossError(ResNetJaxError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


class WorkdirBusyError(ResNetJaxError, RuntimeError):
  """Another run holds the workdir's lock (one run per workdir)."""


class StorageError(ResNetJaxError, OSError):
  """A file or directory cannot be written: no space left, no permission, a read-only
  filesystem. The message names the path and the free space there
  (`resnet_jax.storage.write_error` makes it)."""


class DataWorkerError(ResNetJaxError, RuntimeError):
  """A worker process of the input pipeline died (killed, out of memory) during a run."""
