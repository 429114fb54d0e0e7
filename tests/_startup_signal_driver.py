"""Runs experiments/train.py with one moment of a run made observable, for
test_faults_startup.py: the test waits for the marker file, then sends its signal.

  STARTUP_PHASE=load|compile|save STARTUP_MARKER=<path> python _startup_signal_driver.py ARGS

load: the marker appears when data loading starts, which then takes 5 s more (a slow
  disk), so that the signal lands inside the load.
compile: the marker appears when the first train program is called, which XLA then
  compiles (run without a compilation cache, so that this takes seconds).
save: the marker appears when the first checkpoint's save has been started; the save
  is then given 2 s more before the loop goes on.
"""
import dataclasses
import os
import sys
import time

from resnet_jax.train import checkpoint, setup, steps

PHASE = os.environ['STARTUP_PHASE']
MARKER = os.environ['STARTUP_MARKER']


def _announce() -> None:
  with open(MARKER, 'w') as f:
    f.write(PHASE)


def _slow_load(original):
  def load_data(config):
    _announce()
    time.sleep(5)
    return original(config)
  return load_data


def _announced_first_program_call(original):
  """The marker appears when a train program is first called, i.e. once the loop has
  decided to run step 1 and JAX starts tracing and compiling it (announcing before the
  feed's first stop check let a slow child see the signal before step 1)."""
  def make_step_functions(*args, **kwargs):
    fns = original(*args, **kwargs)

    def announced(program):
      def call(*call_args, **call_kwargs):
        if not os.path.exists(MARKER):
          _announce()
        return program(*call_args, **call_kwargs)
      return call

    return dataclasses.replace(fns, **{
        field.name: announced(getattr(fns, field.name))
        for field in dataclasses.fields(fns) if field.name.startswith('train_')})
  return make_step_functions


def _slow_first_save(original):
  calls = []

  def save(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    if not calls:
      calls.append(1)
      _announce()
      time.sleep(2)
    return result
  return save


if PHASE == 'load':
  setup.load_data = _slow_load(setup.load_data)
elif PHASE == 'compile':
  steps.make_step_functions = _announced_first_program_call(steps.make_step_functions)
elif PHASE == 'save':
  checkpoint.Checkpointer.save = _slow_first_save(checkpoint.Checkpointer.save)
else:
  raise SystemExit(f'unknown STARTUP_PHASE {PHASE!r}')

from experiments import train  # noqa: E402 (after the patches)

sys.exit(train.main(sys.argv[1:]))
