"""Trains a model from a config file, resuming from --workdir if it holds a run.

  python experiments/train.py                       # ResNet-50 on SIGNS (the main job)
  python experiments/train.py --config experiments/configs/digits_resnet.py \
      --workdir runs/digits --config.train.num_epochs=5

Bad input (config, overrides, data, checkpoint, flags) prints one `error:` line and exits
with code 2; --debug shows the traceback. So does a second run on a workdir a run is using
(WorkdirBusyError names the process that holds it), and a resume whose config changes what
the run computes or whose data are not those the run trained on (ConfigError naming each
field, or each class whose name changed: "class 1: 'cat' there, 'dog' now", or the data's
identity where the classes are the same; --config.run.allow_changes_on_resume=True records
the change in <workdir>/config_changes.jsonl and goes on). A run that fails before its
first steps are done (an image that cannot be decoded, a full disk) leaves the workdir as
it was, and removes one it created.

SIGTERM or SIGINT (Ctrl-C) at any moment exits 0 without a traceback: during training the
current step finishes and a checkpoint is saved; during start-up (loading data, compiling,
restoring) there is nothing to save, and a workdir the run created is removed again. Rerun
the same command to continue.

Several hosts: start the same command on every host, adding
  --coordinator_address=HOST0:PORT --num_processes=N --process_id=I
(or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID,
or --distributed alone where jax.distributed detects the cluster: Cloud TPU, SLURM, Open MPI,
Kubernetes with the `kubernetes` package). On SLURM start one task per GPU: JAX gives each
task the GPU of its SLURM_LOCALID, and a process that uses fewer GPUs than it can see says
so in one warning line. config.train.batch_size is the global batch; --workdir must be one
directory all hosts share.
"""
import logging
import os
import re
import sys
from typing import Optional

from absl import app, flags

if not __package__:  # Run as `python experiments/train.py`: import experiments from the checkout.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import cli, malloc_tuning  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                              'signs_resnet50.py')

SCRIPT = cli.Script(__doc__)
_CONFIG = SCRIPT.define_config(DEFAULT_CONFIG, 'Path to a config file; override fields with '
                               '--config.<group>.<field>=value (e.g. '
                               '--config.optim.learning_rate=0.01).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and plots go '
                               '(default: runs/<config file name>).', flag_values=SCRIPT.flags)
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Join a multi-process run through '
                                 'jax.distributed.initialize (implied by the three flags below).',
                                 flag_values=SCRIPT.flags)
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0, for '
                                   'multi-process runs.', flag_values=SCRIPT.flags)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.',
                                      flag_values=SCRIPT.flags)
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index in [0, '
                                   'num_processes).', flag_values=SCRIPT.flags)


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value is None or value == '':
    return None
  try:
    return int(value)
  except ValueError:
    raise app.UsageError(f'{name}={value!r}: expected an integer') from None


def initialize_distributed() -> None:
  """Joins the processes of a multi-process run before anything touches a device.

  The flags win over JAX's environment variables (JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES, JAX_PROCESS_ID), which win over the cluster jax.distributed detects.
  """
  coordinator = _COORDINATOR.value or os.environ.get('JAX_COORDINATOR_ADDRESS') or None
  num_processes = (_NUM_PROCESSES.value if _NUM_PROCESSES.value is not None
                   else _env_int('JAX_NUM_PROCESSES'))
  process_id = _PROCESS_ID.value if _PROCESS_ID.value is not None else _env_int('JAX_PROCESS_ID')
  if not _DISTRIBUTED.value and all(v is None for v in (coordinator, num_processes, process_id)):
    return
  import jax
  # On CPU, cross-process collectives need an implementation (gloo ships with jaxlib).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)
  warning = device_use_warning(jax.local_device_count(), jax.default_backend())
  if warning:
    logging.getLogger('resnet_jax').warning('%s', warning)


def visible_gpus(environ=os.environ, dev_dir: str = '/dev') -> int:
  """The GPUs this process can see: CUDA_VISIBLE_DEVICES when set, else /dev/nvidia<N>."""
  listed = environ.get('CUDA_VISIBLE_DEVICES')
  if listed is not None:
    return len([d for d in listed.split(',') if d.strip() and d.strip() != '-1'])
  try:
    return len([n for n in os.listdir(dev_dir) if re.fullmatch(r'nvidia\d+', n)])
  except OSError:
    return 0


def device_use_warning(used: int, backend: str, environ=os.environ,
                       dev_dir: str = '/dev') -> Optional[str]:
  """One line when this process uses fewer GPUs than it can see (None otherwise): SLURM with
  one task per node, where jax.distributed gives each task the GPU of its SLURM_LOCALID."""
  if backend != 'gpu':
    return None
  visible = visible_gpus(environ, dev_dir)
  if used >= visible:
    return None
  return (f'this process uses {used} of the {visible} GPUs it can see (on SLURM, '
          'jax.distributed gives each task the GPU of its SLURM_LOCALID): start one task per '
          f'GPU (srun --ntasks-per-node={visible}), or set JAX_LOCAL_DEVICE_IDS='
          f'{",".join(map(str, range(visible)))} for one process to use them all')


def summary(result: dict) -> str:
  """The closing summary printed on stdout."""
  lines = ['', '== summary ==']
  if result.get('stopped_before_start'):
    lines.append('stopped by a signal before the first training step; nothing to save; '
                 'rerun the same command to start')
  elif result.get('preempted'):
    lines.append(f"stopped by a signal at step {result['step']}; rerun the same command "
                 'to continue')
  split = result.get('eval_split', 'test')  # What the data call the evaluation split.
  for key, label, measured_at in (
      ('step', 'steps', None), ('epoch', 'epochs', None),
      ('train_loss', 'train loss', 'train_step'),
      ('train_accuracy', 'train accuracy', 'train_step'),
      ('eval_loss', f'{split} loss', 'eval_step'),
      ('eval_accuracy', f'{split} accuracy', 'eval_step')):
    if key in result:
      value = result[key]
      text = f'{value:.4f}' if isinstance(value, float) else f'{value}'
      # Metrics measured before the stop step say when.
      at = result.get(measured_at)
      if at is not None and at != result.get('step'):
        text += f' (at step {at})'
      lines.append(f'{label:>16}: {text}')
  if result.get('resumed_from') is not None:
    lines.append(f"{'resumed from':>16}: step {result['resumed_from']}")
  lines.append(f"{'data':>16}: {result.get('data_source')}")
  lines.append(f"{'checkpoint':>16}: {result.get('checkpoint')}")
  lines.append(f"{'workdir':>16}: {result.get('workdir')}")
  return '\n'.join(lines)


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  initialize_distributed()
  from resnet_jax.train import train_and_evaluate
  cli.release_stop_signals()  # Imported: a signal that waited stops the script here.
  workdir = _WORKDIR.value or cli.default_workdir(SCRIPT.config_path())
  print(summary(train_and_evaluate(_CONFIG.value, workdir)))
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  # Until train_and_evaluate takes over the signals (its first act) nothing is written:
  # a signal while the libraries load ends the script with one line.
  return SCRIPT.run_stoppable(_main, argv)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
