"""What every script in experiments/ shares: flags, the error line, exit codes, --debug, logging.

A script holds one `Script`: its own absl `FlagValues` (with --debug), so that several
scripts can be imported into one process (tests do) without absl's DuplicateFlagError,
and the runner of its body:

  SCRIPT = cli.Script(__doc__)
  _WORKDIR = flags.DEFINE_string('workdir', None, '...', flag_values=SCRIPT.flags)

  def main(argv=None) -> int:
    return SCRIPT.run(_main, argv)

  if __name__ == '__main__':
    sys.exit(main())

`Script.run` parses the flags, sets up logging and calls the body with the positional
arguments. Bad input never shows a traceback unless --debug is given: it prints one line
on stderr,

  error: <ErrorType>: <message>

and the script exits with EXIT_BAD_INPUT (2). Bad input is a library error
(`resnet_jax.errors.ResNetJaxError`: config, data, weights, checkpoint, storage), an OSError
that says a write failed for lack of space or permission (reported as the StorageError
naming the file: a full disk is not a bug, wherever it is met), an unknown flag or
an ill-typed flag value, a misspelled or ill-typed `--config.group.field=value` override, a
config file that cannot be loaded, or a usage error (`absl.app.UsageError`: wrong
positional arguments, conflicting flags). Anything else is a bug and keeps its traceback
(exit code 1).

A script that trains (train.py, ablation.py) runs its body with `Script.run_stoppable`:
SIGTERM/SIGINT outside the training loop, start-up included, end it with one line and
exit code 0 instead of a KeyboardInterrupt traceback or a silent kill.

A dash in a flag's name is read as an underscore (`--image-size 64` is `--image_size=64`),
so either spelling works.
"""
import logging
import os
import re
import signal
import sys
import threading
import traceback
from typing import Callable, Sequence

from absl import app, flags, logging as absl_logging
from ml_collections import config_flags

EXIT_OK = 0  # Done; also a run stopped by SIGTERM/SIGINT after saving a checkpoint.
EXIT_BAD_INPUT = 2  # Bad input, reported as one `error:` line; nothing on disk was changed.
# The checkpoint evaluate.py and predict.py use unless --checkpoint says otherwise: the best
# by the run's own evaluation accuracy (the model the run selected).
DEFAULT_CHECKPOINT = 'best'

# ml_collections reports a misspelled or ill-typed --config override (with a "did you mean")
# as one of these from inside flag parsing.
_OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)
# ...and defers a config file that cannot be loaded (missing, no get_config, a syntax
# error) to the config's first use.
_CONFIG_FILE_ERRORS = (OSError, ImportError, SyntaxError, AttributeError, NameError)
# ...but an explicit --config file is imported while the flags are parsed: of its errors,
# those that cannot come from an override.
_CONFIG_FILE_PARSE_ERRORS = (OSError, ImportError, SyntaxError, NameError)


def restore_continuations(doc: str) -> str:
  """`doc` with the line breaks of its command examples back: in a docstring that is not a
  raw string, a backslash at the end of a line joins it with the next, leaving a run of
  spaces before the next flag ('... 64       --batch_size 32'). --help shows the command
  as it was written, one backslash-continued line per line."""
  lines = []
  for line in (doc or '').split('\n'):
    if line.lstrip().startswith('python '):
      line = re.sub(r' {3,}(?=--)', ' \\\n      ', line)
    lines.append(line)
  return '\n'.join(lines)


class Script:
  """One script's flags and the runner of its body."""

  def __init__(self, doc: str):
    self.doc = restore_continuations(doc)
    self.flags = flags.FlagValues()
    self._debug = flags.DEFINE_bool('debug', False, 'Show the traceback of an error, bad '
                                    'input included.', flag_values=self.flags)
    self._config_default = None
    self._config_argv = []  # What --config reads its overrides from (see define_config).

  def define_config(self, default_path: str, help_text: str, **kwargs) -> flags.FlagHolder:
    """--config: an ml_collections config file with --config.field=value overrides.

    Unlike a bare `config_flags.DEFINE_config_file`, nothing is read at import time: the
    default file is loaded while `run` parses the command line, so that its errors (and
    those of its overrides) are reported like any other bad input.
    """
    self._config_default = default_path
    return config_flags.DEFINE_config_file(
        'config', None, f'{help_text} (default: {default_path})', flag_values=self.flags,
        sys_argv=self._config_argv, **kwargs)

  def config_path(self) -> str:
    """The config file the last `run` loaded (without its ':' argument, if any)."""
    return self.flags['config'].config_filename.split(':')[0]

  def run(self, body: Callable[[list], int | None], argv: Sequence[str] | None = None, *,
          library_level: int = logging.WARNING) -> int:
    """Parses `argv` (the arguments after the program's name; default: sys.argv[1:]), sets
    up logging (see `setup_logging`) and returns `body(positional arguments)` (None is 0).

    Bad input becomes one error line and EXIT_BAD_INPUT; --help prints the doc and flags.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = any(arg in ('--debug', '--debug=true', '--debug=True', '--debug=1')
                for arg in argv)
    if '--help' in argv or '-h' in argv:
      print(f'{self.doc.strip()}\n\nflags:\n{self.flags.get_help(include_special_flags=False)}')
      return EXIT_OK
    from resnet_jax.errors import ConfigError, ResNetJaxError
    try:
      positional = self.parse(argv)
    except app.UsageError as error:
      return report(error, debug)
    except flags.Error as error:
      return report(error, debug, hint='pass --help for the flags')
    except _CONFIG_FILE_PARSE_ERRORS as error:
      return report(self._config_file_error(argv, error), debug)
    except _OVERRIDE_ERRORS as error:
      return report(ConfigError(f'bad --config override: {_override_message(error)}'
                                f'{_grouped_name_hint(argv)}'), debug)
    setup_logging(library_level)
    try:
      self._raise_config_file_error()
      return body(positional) or EXIT_OK
    except (ResNetJaxError, app.UsageError) as error:
      return report(error, debug)
    except OSError as error:
      failure = storage_failure(error)
      if failure is None:
        raise
      return report(failure, debug)

  def run_stoppable(self, body: Callable[[list], int | None],
                    argv: Sequence[str] | None = None, *,
                    library_level: int = logging.WARNING) -> int:
    """`run`, for a script that trains: SIGTERM/SIGINT outside the training loop (which
    takes them over while it runs) end the script with one line and EXIT_OK.

    While the flags are parsed and the libraries imported the signals are held (blocked
    at the OS level): raised inside an import, the stop would be mangled by it (numpy's
    extension turns it into an ImportError, jax's garbage-collector callback prints it as
    'Exception ignored' and the run goes on as if no key had been pressed). `body` calls
    `release_stop_signals()` once its imports are done; a signal that waited stops the
    script there.
    """
    if threading.current_thread() is not threading.main_thread():
      return self.run(body, argv, library_level=library_level)
    previous = {number: signal.signal(number, _stop_outside_the_loop)
                for number in _STOP_SIGNALS}
    try:
      if hasattr(signal, 'pthread_sigmask'):  # POSIX.
        _held_masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS))
      try:
        return self.run(body, argv, library_level=library_level)
      finally:
        release_stop_signals()  # If the script ended before its body let them through.
    except _StoppedOutsideTheLoop as stop:
      print(f'stopped by {signal.Signals(stop.args[0]).name} outside the training loop; '
            'what the run saved is kept; rerun the same command to continue',
            file=sys.stderr)
      return EXIT_OK
    finally:
      for number, handler in previous.items():
        signal.signal(number, handler)

  def parse(self, argv: Sequence[str]) -> list:
    """absl's parsing of `argv` (without the program's name); returns the positionals.

    Every flag starts from its default, whatever an earlier call parsed.
    """
    argv = [_underscored(arg) for arg in argv]
    if self._config_default is not None and not any(
        arg == '--config' or arg.startswith('--config=') for arg in argv):
      argv.insert(0, f'--config={self._config_default}')
    self._config_argv[:] = ['', *argv]
    # ml_collections defines one flag per --config.field override while parsing; those of an
    # earlier call would make the same override a DuplicateFlagError.
    for name in [name for name in self.flags if name.startswith('config.')]:
      delattr(self.flags, name)
    self.flags.unparse_flags()
    return self.flags(['', *argv])[1:]

  def _config_file_error(self, argv: Sequence[str], error: BaseException) -> Exception:
    """The ConfigError for a --config file that failed to import while flags were parsed."""
    from resnet_jax.errors import ConfigError
    path = self._config_default
    for arg in argv:
      if arg.startswith('--config='):
        path = arg[len('--config='):]
    for before, arg in zip(argv, argv[1:]):
      if before == '--config':
        path = arg
    path = (path or '').split(':')[0]
    return ConfigError(f'--config={path} cannot be loaded: {type(error).__name__}: {error}')

  def _raise_config_file_error(self) -> None:
    """Raises the error of a config file that failed to load (ml_collections defers it)."""
    if self._config_default is None:
      return
    try:
      self.flags['config'].value.lock  # noqa: B018 (the access raises the deferred error)
    except _CONFIG_FILE_ERRORS as error:
      from resnet_jax.errors import ConfigError
      raise ConfigError(f'--config={self.config_path()} cannot be loaded: '
                        f'{type(error).__name__}: {error}') from error


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_held_masks = []  # The signal mask to restore when the held signals are let through.


class _StoppedOutsideTheLoop(BaseException):
  """SIGTERM/SIGINT before the training loop installed its own handlers (or after)."""


def _stop_outside_the_loop(number, _frame):
  raise _StoppedOutsideTheLoop(number)


def release_stop_signals() -> None:
  """Lets SIGTERM/SIGINT through again (see `Script.run_stoppable`); one that waited is
  delivered here and now."""
  while _held_masks:
    signal.pthread_sigmask(signal.SIG_SETMASK, _held_masks.pop())


def default_workdir(config_path: str, suffix: str = '') -> str:
  """runs/<config file name><suffix>: where a run goes when --workdir is not given."""
  return os.path.join('runs', os.path.splitext(os.path.basename(config_path))[0] + suffix)


def sweep_workdir(workdir: str | None, config_path: str, quick: bool, expected: str) -> str:
  """The directory of a sweep script (ablation.py, landscape.py): `workdir` (--workdir), else
  runs/<config file name>, with '_quick' for a --quick run.

  Raises:
    app.UsageError: it is a file; the message says it should be a directory (`expected`).
  """
  workdir = workdir or default_workdir(config_path, '_quick' if quick else '')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise app.UsageError(f'--workdir={workdir} is a file; expected a directory ({expected})')
  return workdir


def error_line(error: BaseException, hint: str = '') -> str:
  """The one line every script prints for bad input: 'error: <ErrorType>: <message>'."""
  message = ' '.join(str(error).splitlines()).strip()
  if hint:
    message = f"{message.rstrip('.')}; {hint}"
  return f'error: {type(error).__name__}: {message}'


def storage_failure(error: OSError):
  """The StorageError for an OSError that says a write failed for lack of space or
  permission (named by the file the OS gave, if any); None for any other OSError, a bug."""
  from resnet_jax import storage
  if not storage.is_write_failure(error):
    return None
  failure = storage.write_error(error.filename, error)
  failure.__cause__ = error  # --debug shows where it happened.
  return failure


def report(error: BaseException, debug: bool = False, hint: str = '') -> int:
  """Prints the error line on stderr (after the traceback with --debug); returns
  EXIT_BAD_INPUT."""
  if debug:
    traceback.print_exception(error)
  print(error_line(error, hint), file=sys.stderr)
  return EXIT_BAD_INPUT


def setup_logging(library_level: int = logging.WARNING) -> None:
  """Our INFO lines on stderr; other libraries' (the checkpoint library's chatter) only
  from `library_level` up.

  Idempotent, so that a script's `main` can be called more than once in one process.
  """
  absl_logging.set_verbosity(logging.getLevelName(library_level).lower())  # absl's scale.
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _OrbaxMetricsNote) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxMetricsNote())
  root = logging.getLogger()
  root.setLevel(library_level)
  # absl's first log call before any handler exists (orbax's, while the config file imports
  # resnet_jax.train) runs logging.basicConfig(): its handler would print every library
  # warning a second time, as 'WARNING:absl:...'.
  for handler in [h for h in root.handlers if _from_basic_config(h)]:
    root.removeHandler(handler)
  ours = logging.getLogger('resnet_jax')
  ours.setLevel(logging.INFO)
  ours.propagate = False
  for logger in (root, ours):
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
      logger.addHandler(_StderrHandler())


def _from_basic_config(handler: logging.Handler) -> bool:
  """Whether `handler` is the one logging.basicConfig() adds (a plain stderr stream with
  logging's BASIC_FORMAT)."""
  return (type(handler) is logging.StreamHandler and handler.formatter is not None
          and handler.formatter._fmt == logging.BASIC_FORMAT)


class _OrbaxMetricsNote(logging.Filter):
  """Orbax warns at every save without eval metrics; those checkpoints are kept by recency."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'did not provide metrics' not in record.getMessage()


class _StderrHandler(logging.StreamHandler):
  """'LEVEL logger: message' on whatever sys.stderr is at the time (pytest's capture too)."""

  def __init__(self):
    super().__init__()
    self.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):
    del value  # Always sys.stderr.


def _underscored(arg: str) -> str:
  """'--image-size=64' -> '--image_size=64'; values, positionals and overrides unchanged."""
  if not arg.startswith('--') or arg == '--':
    return arg
  name, sep, value = arg[2:].partition('=')
  head, dot, rest = name.partition('.')
  return '--' + head.replace('-', '_') + dot + rest + sep + value


# Names of the earlier flat config layout that are not the last part of their new name.
_RENAMED_FIELDS = {'model': 'model.name', 'dataset': 'data.name', 'optimizer': 'optim.name',
                   'augment': 'data.augment', 'augment.crop_resize': 'speed.crop_resize'}


def _grouped_name_hint(argv: Sequence[str]) -> str:
  """' (fields are grouped now: optim.learning_rate)' when an override names a field of a
  training config as the earlier flat layout did (--config.learning_rate); '' otherwise."""
  from resnet_jax.train.config import base_config
  config = base_config()
  grouped = {field: f'{group}.{field}' for group, fields in config.items() for field in fields}
  grouped.update(_RENAMED_FIELDS)
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    name = arg.split('=', 1)[0][len('--config.'):]
    first, _, rest = name.partition('.')
    if first in config:
      continue
    if name in grouped:
      return f' (fields are grouped now: {grouped[name]})'
    if first in grouped:
      return f' (fields are grouped now: {grouped[first]}{"." + rest if rest else ""})'
  return ''


def _override_message(error: Exception) -> str:
  message = str(error.args[0] if len(error.args) == 1 else error).strip('\'"')
  return message.replace('\\n', ' ').replace('\n', ' ').replace("\\'", "'")
