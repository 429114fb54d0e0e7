"""Training throughput of train.py's own programs and feed, timed on random data.

Every path is train.py's code: the model, optimizer and programs come from
`setup.build_model`, `optim.create_optimizer` and `steps.make_step_functions`, and a path
is driven through the feed the training loop uses (resnet_jax.train.feed: the input
pipeline's batches, made on the host, sharded onto the devices), one chunk of
steps_per_dispatch steps at a time. Two paths, each reported under its own name:
- 'train_chunk' (program 'chunk'): a chunk's batches stacked and run in one dispatch
  (`lax.scan`; train.py's choice off CPU);
- 'train_step' (program 'step'): one dispatch per step (train.py's choice on CPU, where
  XLA leaves convolutions inside loops on its slow path).
With `baseline`, an outside reference is timed beside them: 'baseline', the plain Flax
step of perf/flax_baseline.py (not train.py's code, on purpose).

How the numbers are taken:
- the data are random uint8 images of the requested size, made into batches by the input
  pipeline in this process (train.py's default, speed.data_workers=0), not augmented;
- compile time is that of `lower(...).compile()` of the path's program;
- warm-up steps run after compiling and are not timed;
- a window dispatches its steps back to back and ends with `block_until_ready`; the
  reported time is the median over windows; the paths' windows alternate, so that all
  see the same load on a shared machine, and a speed-up is the median of the per-window
  ratios;
- FLOPs come from XLA's cost analysis of the compiled program, which counts a loop's body
  once: a chunk's program (a scan over its steps) counts one step, as the step's does;
  pmap compiles one device's program, so it is multiplied by the device count.
"""
import dataclasses
import logging
import os
import statistics
import time
from typing import Optional, Sequence

import flax
import jax
import ml_collections
import numpy as np

from resnet_jax.data import pipeline
from resnet_jax.data.fake_images import load_fake_imagenet
from resnet_jax.errors import ConfigError
from resnet_jax.perf import flax_baseline, hardware
from resnet_jax.train import (
  config as config_lib,
  devices as devices_lib,
  feed as feed_lib,
  optim,
  setup,
  steps,
)
from resnet_jax.train.run_shape import RunShape
from resnet_jax.train.state import create_train_state

log = logging.getLogger(__name__)

# Program -> the name its records carry.
PATH_NAMES = {'chunk': 'train_chunk', 'step': 'train_step'}
PROGRAMS = tuple(PATH_NAMES)
BASELINE = flax_baseline.FlaxBaselinePath.name


@dataclasses.dataclass(frozen=True)
class Workload:
  """What is trained: the model, its input and the optimizer; batch_size is global."""
  model: str = 'resnet50'
  layout: str = 'coursera'
  image_size: int = 64
  batch_size: int = 32
  dtype: str = 'float32'
  num_classes: int = 6
  optimizer: str = 'adam'
  steps_per_dispatch: int = 1
  conv_impl: str = 'auto'  # config.speed.conv_impl: how the convolutions compute.


# Workload field -> the config field it sets.
_WORKLOAD_FIELDS = {'model': 'model.name', 'layout': 'model.layout',
                    'num_classes': 'model.num_classes', 'dtype': 'model.dtype',
                    'image_size': 'data.image_size', 'batch_size': 'train.batch_size',
                    'optimizer': 'optim.name', 'steps_per_dispatch': 'speed.steps_per_dispatch',
                    'conv_impl': 'speed.conv_impl'}


def workload_config(workload: Workload) -> ml_collections.ConfigDict:
  """The training config of `workload` (base_config defaults elsewhere), validated."""
  config = config_lib.base_config()
  for attribute, field in _WORKLOAD_FIELDS.items():
    group, name = field.split('.')
    config[group][name] = getattr(workload, attribute)
  config.data.name = 'fake_imagenet'
  config_lib.validate_config(config)
  return config


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def default_program() -> str:
  """The program train.py runs on this backend (see steps.default_chunk_on_device)."""
  return 'chunk' if steps.default_chunk_on_device() else 'step'


class TrainingPath:
  """train.py's feed over a random split, driven chunk by chunk as the loop does.

  Args:
    workload: what to train.
    program: 'chunk' or 'step' (the feed with and without chunks in one dispatch); see the
      module docstring.
    model: a flax module to use instead of the one the workload names (tests).
    epoch_steps: steps per epoch of the random split; rounded up to a multiple of
      steps_per_dispatch, because a chunk never crosses an epoch (as in the loop).
  """

  def __init__(self, workload: Workload, program: str, model=None, epoch_steps: int = 8,
               seed: int = 0):
    if program not in PATH_NAMES:
      raise ConfigError(f'program={program!r}: expected one of {tuple(PATH_NAMES)}')
    config = workload_config(workload)
    config.train.seed = seed
    self.workload, self.program, self.name = workload, program, PATH_NAMES[program]
    # The loop hands the feed chunks of steps_per_dispatch steps; only 'chunk' runs a chunk
    # in one dispatch.
    self.chunk_steps = workload.steps_per_dispatch
    self.steps_per_dispatch = self.chunk_steps if program == 'chunk' else 1
    epoch_steps = _round_up(max(epoch_steps, 1), workload.steps_per_dispatch)
    size = workload.image_size
    data = load_fake_imagenet(image_size=size, num_train=epoch_steps * workload.batch_size,
                              num_test=1, num_classes=workload.num_classes, seed=seed)
    shape = RunShape.from_config(config.train, None, len(data.train), len(data.test))
    self.devices = shape.local_devices
    model = model if model is not None else setup.build_model(config)
    tx, _ = optim.create_optimizer(config.optim, shape.steps_per_epoch, shape.total_steps)
    fns = steps.make_step_functions(model, tx, steps.StepSettings.from_config(config),
                                    devices=self.devices)
    recipe = setup.input_recipe(config)
    self.feed = feed_lib.Feed(fns, data, shape, recipe, chunk_on_device=program == 'chunk')
    sample = next(pipeline.iterate(pipeline.train_dataset(
        data.train, shape.train, recipe, 0, self.steps_per_dispatch), len(self.devices)))
    if program == 'chunk':
      sample = {k: np.repeat(v[:, None], self.chunk_steps, axis=1) for k, v in sample.items()}
      self._program = fns.train_chunk, (devices_lib.shard_leading_axis(sample, self.devices),)
    else:
      self._program = fns.train_step, (devices_lib.shard_leading_axis(sample, self.devices),)
    state = create_train_state(model, tx, (size, size, 3), seed)
    self.state = devices_lib.replicate_on_devices(jax.tree.map(np.asarray, state), self.devices)
    self.step = 0
    self.last_sums = None
    self.flops_per_step = None
    self.program_bytes = None

  def compile(self) -> float:
    """Traces and compiles the path's program; returns the seconds."""
    program, args = self._program
    start = time.perf_counter()
    compiled = program.lower(self.state, *args).compile()
    seconds = time.perf_counter() - start
    flops, self.program_bytes = hardware.compiled_cost(compiled)
    if flops is not None:
      self.flops_per_step = flops * len(self.devices)
    return seconds

  def run(self, num_steps: int) -> None:
    """Runs `num_steps` (a multiple of chunk_steps) through the feed; waits for the device."""
    for _ in range(num_steps // self.chunk_steps):
      self.state, sums, done = self.feed.train(self.state, self.step, self.chunk_steps)
      if done != self.chunk_steps:
        raise RuntimeError(f'{self.name}: a chunk ran {done} of {self.chunk_steps} steps')
      self.step += done
      self.last_sums = sums[-1]
    jax.block_until_ready((self.state, self.last_sums))

  def steps_taken(self) -> int:
    """The state's step counter (the first device's)."""
    return int(np.asarray(self.state.step.addressable_shards[0].data)[0])


def time_windows(paths: Sequence[TrainingPath], num_steps: int, windows: int) -> dict:
  """{path name: [seconds per window]}, the paths' windows alternating."""
  times = {path.name: [] for path in paths}
  for _ in range(windows):
    for path in paths:
      start = time.perf_counter()
      path.run(num_steps)
      times[path.name].append(time.perf_counter() - start)
  return times


def _record(path: TrainingPath, window_seconds: list, num_steps: int, compile_seconds: float,
            peak_bytes: Optional[int]) -> dict:
  workload, device = path.workload, path.devices[0]
  seconds_per_step = statistics.median(window_seconds) / num_steps
  flops = path.flops_per_step
  achieved = flops / seconds_per_step / 1e12 if flops else None
  peak, source = hardware.peak_tflops(device.device_kind, workload.dtype)
  return {
      'path': path.name,
      'train_py_default': path.program == default_program(),
      'model': workload.model, 'layout': workload.layout, 'image_size': workload.image_size,
      'batch_size': workload.batch_size, 'dtype': workload.dtype,
      'num_classes': workload.num_classes, 'optimizer': workload.optimizer,
      'steps_per_dispatch': path.steps_per_dispatch, 'conv_impl': workload.conv_impl,
      'img_per_sec': workload.batch_size / seconds_per_step,
      'ms_per_step': 1e3 * seconds_per_step,
      'window_ms_per_step': [1e3 * s / num_steps for s in window_seconds],
      'timed_steps_per_window': num_steps, 'windows': len(window_seconds),
      'compile_seconds': compile_seconds,
      'device': {'kind': device.device_kind, 'count': len(path.devices)},
      'backend': device.platform,
      'peak_memory_bytes': peak_bytes,
      'program_memory_bytes': path.program_bytes,
      'flops_per_step': flops,
      'achieved_tflops': achieved,
      'peak_tflops': peak,
      'peak_reference': source,
      'fraction_of_peak': achieved / peak if (achieved and peak) else None,
      'jax_version': jax.__version__, 'flax_version': flax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS') or None,
  }


def build_paths(workload: Workload, *, programs: Optional[Sequence[str]] = None,
                baseline: bool = False, model=None, epoch_steps: int = 8) -> list:
  """TrainingPaths for `programs` ('chunk', 'step'; default: train.py's on this backend),
  then the plain Flax baseline if asked."""
  programs = list(dict.fromkeys(programs or (default_program(),)))
  for program in programs:
    if program not in PROGRAMS:
      raise ConfigError(f'program={program!r}: expected one of {PROGRAMS}')
  paths = [TrainingPath(workload, program, model=model, epoch_steps=epoch_steps)
           for program in programs]
  if baseline:
    config = workload_config(workload)
    model = model if model is not None else setup.build_model(config)
    paths.append(flax_baseline.FlaxBaselinePath(workload, model, config.optim.learning_rate))
  return paths


def measure_paths(paths: Sequence[TrainingPath], *, steps: int, windows: int = 5,
                  warmup_steps: int = 2) -> list[dict]:
  """Compiles, warms up and times `paths` (of one workload) in alternating windows.

  Args:
    steps: timed steps per window (rounded up to whole chunks of every path).
    windows: timed windows per path; the median is reported.
    warmup_steps: untimed steps after compiling (rounded up likewise; at least 1).

  Returns:
    One record per path. When a path is the baseline, every other record also carries
    its ms_per_step and `speedup_vs_baseline`, the median of per-window ratios.
  """
  chunk = max(path.chunk_steps for path in paths)
  num_steps = _round_up(max(steps, 1), chunk)
  warmup = _round_up(max(warmup_steps, 1), chunk)
  compile_seconds, peaks = {}, {}
  for path in paths:
    compile_seconds[path.name] = path.compile()
    log.info('%s: compiled in %.1f s; %d warm-up steps', path.name, compile_seconds[path.name],
             warmup)
    path.run(warmup)
    # The process-wide peak so far: the first path's figure is its own, later ones are
    # upper bounds.
    peaks[path.name] = hardware.peak_memory_bytes(path.devices[0])
  log.info('timing %d windows of %d steps per path', windows, num_steps)
  times = time_windows(paths, num_steps, windows)
  records = [_record(path, times[path.name], num_steps, compile_seconds[path.name],
                     peaks[path.name]) for path in paths]
  base = next((r for r in records if r['path'] == BASELINE), None)
  for record in records:
    if base is not None and record is not base:
      ratios = [b / f for f, b in zip(times[record['path']], times[BASELINE])]
      record['baseline_ms_per_step'] = base['ms_per_step']
      record['speedup_vs_baseline'] = statistics.median(ratios)
  return records


def measure(workload: Workload, *, steps: int, windows: int = 5, warmup_steps: int = 2,
            programs: Optional[Sequence[str]] = None, baseline: bool = False, model=None,
            epoch_steps: int = 8) -> list[dict]:
  """`build_paths` then `measure_paths`: one record per path, timed in one process.

  Args:
    programs: train.py's programs to time, 'chunk' and/or 'step' (default: the one
      train.py runs on this backend).
    baseline: also time the plain Flax step (see measure_paths).
    model: a flax module to use instead of the one the workload names (tests).
    epoch_steps: batches in the random split (see TrainingPath).
  """
  paths = build_paths(workload, programs=programs, baseline=baseline, model=model,
                      epoch_steps=epoch_steps)
  return measure_paths(paths, steps=steps, windows=windows, warmup_steps=warmup_steps)
