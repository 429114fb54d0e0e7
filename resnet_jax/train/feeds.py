"""Feeds: the ways of getting a run's data to the devices, behind one interface.

The training loop asks a feed two things (the `Feed` protocol): run up to n steps from
the current step, and evaluate. How the batches reach the devices is the feed's business:
- `ResidentFeed`: both splits replicated on every device once; each step gathers its batch
  by index inside the program, either n steps per dispatch in an on-device loop or one
  dispatch per step (the choice on CPU, see steps.default_loop_on_device);
- `HostFeed`: the host iterator (pipeline.train_batches / eval_batches), each batch
  transferred to the devices a few steps ahead; for splits that do not fit.
Every feed yields the batches `pipeline` defines for a step, so all give the same run.

A feed that dispatches step by step runs them through `dispatch_steps`, the one place that
bounds how far the host runs ahead of the devices.
"""
import logging
from typing import Callable, Optional, Protocol

import jax
import ml_collections
import numpy as np

from resnet_jax.data import pipeline
from resnet_jax.data.types import Dataset
from resnet_jax.train import steps
from resnet_jax.train.run_shape import RunShape
from resnet_jax.train.state import TrainState, unreplicate

log = logging.getLogger(__name__)

# Dispatches may run ahead of the devices by this many steps: enough to keep a device busy
# while the host prepares the next dispatch, few enough that a stop request is honoured
# within about this many steps however long the chunk, and that queued host batches stay few.
MAX_STEPS_IN_FLIGHT = 2

StopCheck = Optional[Callable[[], bool]]


class Feed(Protocol):
  """What the training loop needs from a way of feeding data."""

  def train(self, state: TrainState, step: int, num_steps: int,
            should_stop: StopCheck = None) -> tuple[TrainState, list, int]:
    """Runs up to `num_steps` training steps from `step` (the state's step).

    Args:
      state: the replicated training state (donated).
      step: the state's step, so that a feed can position its input without a fetch.
      num_steps: steps to run; the loop never asks for steps across an epoch's end.
      should_stop: asked between steps where the feed dispatches step by step; when it
        returns True the feed stops early.

    Returns:
      (state, the device-side metric sums of each dispatch, the number of steps run).
    """

  def evaluate(self, state: TrainState) -> dict:
    """{'eval_loss', 'eval_accuracy'} (and 'eval_top5_accuracy' with 10 or more classes)
    over the whole test split."""

  def close(self) -> None:
    """Releases what the feed holds besides device memory (worker processes)."""


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


class ResidentFeed:
  """Both splits replicated on the devices; programs gather each batch by index.

  Args:
    fns: the run's programs.
    dataset: its train and test splits are copied to every local device.
    shape: the run's shape.
    loop_on_device: run a chunk as one dispatch of an on-device loop (and an evaluation
      as one dispatch); else one dispatch per step (per evaluation batch). None picks
      steps.default_loop_on_device().
  """

  def __init__(self, fns: steps.StepFunctions, dataset: Dataset, shape: RunShape,
               loop_on_device: Optional[bool] = None):
    devices = shape.local_devices
    self.fns, self.shape = fns, shape
    self.loop_on_device = (steps.default_loop_on_device() if loop_on_device is None
                           else loop_on_device)
    self.device_index = pipeline.shard_leading_axis(shape.train.global_device_indices, devices)
    self.train_data = pipeline.replicate_on_devices(
        {'image': dataset.train.images, 'label': dataset.train.labels}, devices)
    self.eval_data = pipeline.replicate_on_devices(
        pipeline.pad_split(dataset.test, shape.eval.global_batch), devices)

  def _per_device(self, value: int) -> np.ndarray:
    return np.full((len(self.shape.local_devices),), value, np.int32)

  def train(self, state, step, num_steps, should_stop=None):
    del step  # The programs read it from the state.
    if self.loop_on_device:
      state, sums = self.fns.train_steps_on_device(state, self.train_data, self.device_index,
                                                   self._per_device(num_steps))
      return state, [sums], num_steps
    return dispatch_steps(
        lambda s: self.fns.train_step_resident(s, self.train_data, self.device_index),
        state, num_steps, should_stop)

  def close(self) -> None:
    pass

  def evaluate(self, state) -> dict:
    if self.loop_on_device:
      return eval_metrics([self.fns.eval_on_device(state, self.eval_data, self.device_index)])
    return eval_metrics([
        self.fns.eval_batch_resident(state, self.eval_data, self.device_index,
                                     self._per_device(index))
        for index in range(self.shape.num_eval_batches)])


class FedFeed:
  """What every feed of host-made batches shares: the `*_fed` programs, one dispatch per
  step, and a batch iterator whose position is the step. A subclass's `_start(step)` sets
  `self._batches` to the device batches from `step` on; `train` calls it on the first call
  and after a jump (a resume), and nothing else is needed for an exact resume."""
  fns: steps.StepFunctions
  _batches = None
  _next_step = None

  def _start(self, step: int) -> None:
    raise NotImplementedError

  def train(self, state, step, num_steps, should_stop=None):
    if step != self._next_step:
      self._start(step)
    state, sums, done = dispatch_steps(
        lambda s: self.fns.train_step_fed(s, next(self._batches)), state, num_steps,
        should_stop)
    self._next_step = step + done
    return state, sums, done


class HostFeed(FedFeed):
  """Batches assembled on the host (numpy) and transferred to the devices ahead of use.

  Args:
    fns: the run's programs.
    dataset: the splits, read on the host.
    shape: the run's shape.
    data_key: the key of the epochs' order (see pipeline).
  """

  def __init__(self, fns: steps.StepFunctions, dataset: Dataset, shape: RunShape,
               data_key: jax.Array):
    self.fns, self.dataset, self.shape, self.data_key = fns, dataset, shape, data_key

  def _start(self, step: int) -> None:
    self._batches = pipeline.prefetch_to_devices(
        pipeline.train_batches(self.dataset.train, self.shape.train, self.data_key, step),
        self.shape.local_devices)

  def close(self) -> None:
    pass

  def evaluate(self, state) -> dict:
    batches = pipeline.prefetch_to_devices(
        pipeline.eval_batches(self.dataset.test, self.shape.eval), self.shape.local_devices)
    return eval_metrics([self.fns.eval_batch_fed(state, batch) for batch in batches])


def make_feed(config: ml_collections.ConfigDict, dataset: Dataset, shape: RunShape,
              fns: steps.StepFunctions, data_key: jax.Array) -> Feed:
  """The feed a config asks for: the Grain pipeline for streamed data (a
  StreamedDataset), resident where the splits fit (a quarter of a device's memory), else
  the host iterator."""
  from resnet_jax.data.streamed import StreamedDataset
  if isinstance(dataset, StreamedDataset):
    from resnet_jax.train.grain_feed import GrainFeed
    return GrainFeed(fns, dataset, shape, config)
  if pipeline.fits_on_devices([dataset.train, dataset.test], shape.local_devices):
    return ResidentFeed(fns, dataset, shape, config.speed.loop_on_device)
  log.warning('the dataset does not fit on the devices; feeding batches from the host')
  return HostFeed(fns, dataset, shape, data_key)
