"""Typed errors. Each message names the file or field, what was found and what was expected."""


class ResNetJaxError(Exception):
  """Base of every error this library raises on purpose."""


class ConfigError(ResNetJaxError, ValueError):
  """A configuration field or a name (model, layout, optimizer, dataset) is wrong."""


class DatasetError(ResNetJaxError, ValueError):
  """A data file or directory is missing, malformed or inconsistent."""


class DamagedCacheError(DatasetError):
  """Data this library generated into its cache cannot be read back; regenerating fixes it."""


class WeightsError(ResNetJaxError, ValueError):
  """A pretrained-weights file does not fit the model it is loaded into."""


class CheckpointError(ResNetJaxError):
  """A checkpoint cannot be restored into this run (wrong model, broken files)."""


class NonFiniteLossError(ResNetJaxError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


class WorkdirBusyError(ResNetJaxError, RuntimeError):
  """Another run holds the workdir's lock (one run per workdir)."""
