"""Runs experiments/train.py with one moment of a run made observable, for
test_faults_startup.py: the test waits for the marker file, then sends its signal.

  STARTUP_PHASE=load|compile|save STARTUP_MARKER=<path> python _startup_signal_driver.py ARGS

load: the marker appears when data loading starts, which then takes 5 s more (a slow
  disk), so that the signal lands inside the load.
compile: the marker appears just before the first dispatch, whose train step XLA then
  compiles (run without a compilation cache, so that this takes seconds).
save: the marker appears when the first checkpoint's save has been started; the save
  is then given 2 s more before the loop goes on.
"""
import os
import sys
import time

from resnet_jax.train import checkpoint, feeds, setup

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


def _announced_first_dispatch(original):
  def make_feed(*args, **kwargs):
    feed = original(*args, **kwargs)
    train = feed.train

    def first_train(*train_args, **train_kwargs):
      feed.train = train
      _announce()
      return train(*train_args, **train_kwargs)

    feed.train = first_train
    return feed
  return make_feed


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
  feeds.make_feed = _announced_first_dispatch(feeds.make_feed)
elif PHASE == 'save':
  checkpoint.Checkpointer.save = _slow_first_save(checkpoint.Checkpointer.save)
else:
  raise SystemExit(f'unknown STARTUP_PHASE {PHASE!r}')

from experiments import train  # noqa: E402 (after the patches)

sys.exit(train.main(sys.argv[1:]))
