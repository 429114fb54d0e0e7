"""Trains a model from a config file, resuming from --workdir if it holds a run.

  python experiments/train.py                       # ResNet-50 on SIGNS (the main job)
  python experiments/train.py --config experiments/configs/digits_resnet.py \
      --workdir runs/digits --config.num_epochs=5

Errors of the library (bad config, data, checkpoint) are printed as one message and exit
with code 2; --debug shows the traceback. SIGTERM/SIGINT save a checkpoint and exit 0.

Several hosts: start the same command on every host, adding
  --coordinator_address=HOST0:PORT --num_processes=N --process_id=I
(or --distributed alone where jax.distributed detects the cluster: Cloud TPU, SLURM, Open MPI).
config.batch_size is the global batch; --workdir must be one directory all hosts share.
"""
import logging
import os
import sys
import traceback

# Runnable as `python experiments/train.py` from a checkout without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                              'signs_resnet50.py')


def bad_override(error: Exception):
  """A misspelled or ill-typed --config override: one clear line, exit code 2.

  ml_collections reports these (with a "did you mean") as an AttributeError, KeyError or
  ValueError from inside flag parsing, which would otherwise surface as a traceback.
  """
  message = str(error.args[0] if len(error.args) == 1 else error).strip('\'"')
  message = message.replace('\\n', ' ').replace('\n', ' ').replace("\\'", "'")
  print(f'error: ConfigError: bad --config override: {message}', file=sys.stderr)
  sys.exit(2)


try:
  # Without --config on the command line the default file is parsed here, overrides included.
  _CONFIG = config_flags.DEFINE_config_file('config', DEFAULT_CONFIG,
                                            'Path to a config file; override fields with '
                                            '--config.field=value.', lock_config=True)
except (AttributeError, KeyError, TypeError, ValueError) as define_error:
  if '--debug' in sys.argv:
    raise
  bad_override(define_error)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and plots go '
                               '(default: runs/<config file name>).')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks of configuration and data errors.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Join a multi-process run through '
                                 'jax.distributed.initialize (implied by the three flags below).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0, for '
                                   'multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index in [0, '
                                   'num_processes).')


def setup_logging() -> None:
  """Our INFO lines on stderr; the checkpoint library's chatter only from WARNING up."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  # Orbax warns at every save without eval metrics; those checkpoints are kept by recency.
  logging.getLogger('absl').addFilter(
      lambda record: 'did not provide metrics' not in record.getMessage())
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
  ours = logging.getLogger('resnet_jax')
  ours.setLevel(logging.INFO)
  ours.addHandler(handler)
  ours.propagate = False


def initialize_distributed() -> None:
  """Joins the processes of a multi-process run before anything touches a device."""
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if not _DISTRIBUTED.value and all(value is None for value in explicit):
    return
  import jax
  # On CPU, cross-process collectives need an implementation (gloo ships with jaxlib).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                             num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', name)


def summary(result: dict) -> str:
  """The closing summary printed on stdout."""
  lines = ['', '== summary ==']
  if result.get('preempted'):
    lines.append(f"stopped by a signal at step {result['step']}; rerun the same command "
                 'to continue')
  for key, label in (('step', 'steps'), ('epoch', 'epochs'), ('train_loss', 'train loss'),
                     ('train_accuracy', 'train accuracy'), ('eval_loss', 'test loss'),
                     ('eval_accuracy', 'test accuracy')):
    if key in result:
      value = result[key]
      lines.append(f'{label:>16}: {value:.4f}' if isinstance(value, float) and key not in (
          'step',) else f'{label:>16}: {value}')
  if result.get('resumed_from') is not None:
    lines.append(f"{'resumed from':>16}: step {result['resumed_from']}")
  lines.append(f"{'data':>16}: {result.get('data_source')}")
  lines.append(f"{'checkpoint':>16}: {result.get('checkpoint')}")
  lines.append(f"{'workdir':>16}: {result.get('workdir')}")
  return '\n'.join(lines)


def parse_flags(argv: list) -> list:
  """absl's parsing, with flag and override errors as one line and exit code 2 (--debug
  shows the traceback)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    print(f'error: {error}\nPass --help for the flags.', file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    if '--debug' in argv:
      raise
    bad_override(error)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  setup_logging()
  initialize_distributed()
  from resnet_jax.errors import ResNetJaxError
  from resnet_jax.train import train_and_evaluate
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  config = _CONFIG.value
  try:
    config.lock  # A config file that failed to load raises on first use.
  except (OSError, ImportError, SyntaxError, AttributeError) as error:
    # ml_collections defers config-file errors (missing file, no get_config) to first use.
    print(f'error: --config: {error}', file=sys.stderr)
    return 2
  try:
    result = train_and_evaluate(config, workdir)
  except ResNetJaxError as error:
    if _DEBUG.value:
      traceback.print_exc()
    print(f'error: {type(error).__name__}: {error}', file=sys.stderr)
    return 2
  print(summary(result))
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
