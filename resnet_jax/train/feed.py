"""The feed: this process's batches from the pipeline onto its devices, and the programs run
on them. The one place where data and training meet.

The training loop asks the feed to run up to n steps from a step, and to evaluate. The feed
iterates the input pipeline (resnet_jax.data.pipeline: the numpy batch of step s, made in
`workers` processes or in this one), shards each batch over this process's devices a few
steps ahead, and dispatches the steps: one `train_step` per dispatch, asking between steps
whether to stop, or, with `chunk_on_device`, the n steps' batches stacked into one
`train_chunk` dispatch. The pipeline's position is the step: `train` starts a new pipeline
at `step` whenever it is not where the last call ended (the first call, a resume), and
nothing else is needed for an exact resume. A data worker that dies (pipeline.iterate's
DataWorkerError) ends the run with a DataWorkerError that says where it was and how to go on.
"""
import itertools
from typing import Callable, Iterator, Optional

import jax
import numpy as np

from resnet_jax.data import pipeline
from resnet_jax.data.types import Dataset
from resnet_jax.errors import DataWorkerError
from resnet_jax.train import devices as devices_lib, steps
from resnet_jax.train.run_shape import RunShape
from resnet_jax.train.state import TrainState, unreplicate

# Dispatches may run ahead of the devices by this many steps: enough to keep a device busy
# while the host prepares the next dispatch, few enough that a stop request is honoured
# within about this many steps, and that queued batches stay few.
MAX_STEPS_IN_FLIGHT = 2

StopCheck = Optional[Callable[[], bool]]


class Feed:
  """Feeds one run's dataset through the pipeline to its programs.

  Args:
    fns: the run's programs.
    dataset: its train and test sources.
    shape: the run's shape (layouts, devices, steps).
    recipe: image size, augmentation and seed of the pipeline.
    workers: decoding processes (0: this process).
    chunk_on_device: run each `train` call as one `train_chunk` dispatch; None picks
      steps.default_chunk_on_device().
    last_checkpoint: () -> (path, step) of the run's last checkpoint on disk, or None; named
      by the error that a dead data worker ends the run with.
  """

  def __init__(self, fns: steps.StepFunctions, dataset: Dataset, shape: RunShape,
               recipe: pipeline.Recipe, workers: int = 0,
               chunk_on_device: Optional[bool] = None,
               last_checkpoint: Optional[Callable[[], Optional[tuple[str, int]]]] = None):
    self.fns, self.dataset, self.shape, self.recipe = fns, dataset, shape, recipe
    self.workers, self.last_checkpoint = workers, last_checkpoint
    self.chunk_on_device = (steps.default_chunk_on_device() if chunk_on_device is None
                            else chunk_on_device)
    self._host_batches = self._next_step = None

  def train(self, state: TrainState, step: int, num_steps: int,
            should_stop: StopCheck = None) -> tuple[TrainState, list, int]:
    """Runs up to `num_steps` training steps from `step` (the state's step).

    Args:
      state: the replicated training state (donated).
      step: the state's step, so that the feed positions its input without a fetch.
      num_steps: steps to run.
      should_stop: asked between steps where they are dispatched one by one; True stops.

    Returns:
      (state, the device-side metric sums of each dispatch, the number of steps run).
    """
    if step != self._next_step:
      self._start(step)
    reached = step  # The steps run so far, for the message of a dead worker.

    def run_step(state):
      nonlocal reached
      out = self.fns.train_step(state, next(self._device_batches))
      reached += 1
      return out

    try:
      if self.chunk_on_device:
        host = list(itertools.islice(self._host_batches, num_steps))
        stacked = {k: np.stack([b[k] for b in host], axis=1) for k in host[0]}
        state, sums = self.fns.train_chunk(
            state, devices_lib.shard_leading_axis(stacked, self.shape.local_devices))
        out, done = [sums], num_steps
      else:
        state, out, done = dispatch_steps(run_step, state, num_steps, should_stop)
    except DataWorkerError as error:
      self.close()
      raise self._worker_died(error, f'at step {reached}') from error
    self._next_step = step + done
    return state, out, done

  def _start(self, step: int) -> None:
    """Starts the training pipeline at `step`."""
    self.close()
    dataset = pipeline.train_dataset(self.dataset.train, self.shape.train, self.recipe, step,
                                     self.shape.total_steps - step)
    self._host_batches = self._iterate(dataset)
    self._device_batches = devices_lib.prefetch_to_devices(self._host_batches,
                                                           self.shape.local_devices)

  def _iterate(self, dataset) -> Iterator[dict]:
    return pipeline.iterate(dataset, len(self.shape.local_devices), self.workers)

  def evaluate(self, state: TrainState) -> dict:
    """{'eval_loss', 'eval_accuracy'} (and 'eval_top5_accuracy' with 10 or more classes)
    over the whole evaluation split, each example once."""
    host = self._iterate(pipeline.eval_dataset(self.dataset.test, self.shape.eval,
                                               self.recipe))
    try:
      batches = devices_lib.prefetch_to_devices(host, self.shape.local_devices)
      return eval_metrics([self.fns.eval_step(state, batch) for batch in batches])
    except DataWorkerError as error:
      raise self._worker_died(
          error, f'while evaluating at step {int(unreplicate(state.step))}') from error
    finally:
      host.close()

  def statistics_batches(self, num_batches: int) -> Iterator[dict]:
    """The device batches BatchNorm statistics are re-estimated from (the same each time;
    see pipeline.statistics_dataset). Close the iterator if not read to its end."""
    host = self._iterate(pipeline.statistics_dataset(self.dataset.train, self.shape.train,
                                                     self.recipe, num_batches))
    try:
      yield from devices_lib.prefetch_to_devices(host, self.shape.local_devices)
    except DataWorkerError as error:
      raise self._worker_died(error, 'while re-estimating the BatchNorm statistics') from error
    finally:
      host.close()

  def _worker_died(self, error: DataWorkerError, where: str) -> DataWorkerError:
    """The run's DataWorkerError: the pipeline's (which worker, how it ended), where the run
    was, and what a rerun does (checkpoints are untouched by a dead worker)."""
    try:
      saved = self.last_checkpoint() if self.last_checkpoint is not None else ()
    except (OSError, ValueError, RuntimeError):  # A failed save (StorageError, Orbax's).
      # It is reported where the run ends; here the dead worker is the news.
      saved = ()
    if saved is None:
      after = 'no checkpoint was saved yet; rerun the same command to start again'
    elif saved:
      after = (f'the last checkpoint ({saved[0]}, step {saved[1]}) is intact; rerun the same '
               'command to resume')
    else:
      after = ('the checkpoints already saved are intact; rerun the same command to resume '
               'from the last one')
    return DataWorkerError(f'{error} {where}; {after}')

  def close(self) -> None:
    """Stops the training pipeline's workers (a later `train` starts a new pipeline)."""
    if self._host_batches is not None:
      self._device_batches.close()
      self._host_batches.close()
    self._host_batches = self._next_step = None


def dispatch_steps(run_step: Callable, state: TrainState, num_steps: int,
                   should_stop: StopCheck = None) -> tuple[TrainState, list, int]:
  """Runs `run_step(state) -> (state, sums)` up to `num_steps` times, one dispatch each.

  Asks `should_stop` before each step, and keeps at most MAX_STEPS_IN_FLIGHT steps in
  flight. Returns (state, [sums of each step], steps run).
  """
  out = []
  for _ in range(num_steps):
    if should_stop is not None and should_stop():
      break
    if len(out) >= MAX_STEPS_IN_FLIGHT:
      jax.block_until_ready(out[-MAX_STEPS_IN_FLIGHT])
    state, sums = run_step(state)
    out.append(sums)
  return state, out, len(out)


def eval_metrics(outputs: list) -> dict:
  """{'eval_loss', 'eval_accuracy'} (and 'eval_top5_accuracy' where the sums have it)
  from the replicated sums of `steps.eval_step`."""
  sums = {}
  for out in outputs:
    out = unreplicate(out)
    sums = {k: sums.get(k, 0.0) + float(out[k]) for k in out}
  metrics = {'eval_loss': sums['loss_sum'] / sums['count'],
             'eval_accuracy': sums['correct_sum'] / sums['count']}
  if 'top5_correct_sum' in sums:
    metrics['eval_top5_accuracy'] = sums['top5_correct_sum'] / sums['count']
  return metrics
