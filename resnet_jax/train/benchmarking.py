"""Training throughput: the library's fast path, and a straightforward Flax step to compare.

Three paths, each reported under its own name:
- 'train_loop' and 'train_resident_step': the programs train.py runs, built by the same
  functions (`setup.build_model`, `optim.create_optimizer`, `steps.make_step_functions`,
  pmapped, donating the state) over a split resident on the devices, and driven as the
  loop drives them (`StepFunctions.train_resident`): K steps per dispatch in a
  `lax.fori_loop`, or one dispatch per step without the loop (train.py's choice on CPU);
- 'baseline': what a Flax user writes first: one `jax.jit` step per dispatch (apply with
  mutable batch_stats, optax update), float32 images sent from the host every step.

How the numbers are taken:
- the data are random uint8 images of the requested size (for the library's paths already
  on the device);
- compile time is that of `lower(...).compile()`, whose executable the later calls reuse;
- warm-up steps run after compiling and are not timed;
- a window dispatches its steps back to back and ends with `block_until_ready`; the
  reported time is the median over windows; the paths' windows alternate, so that all
  see the same load on a shared machine, and a speed-up is the median of the per-window
  ratios;
- FLOPs come from XLA's cost analysis of the compiled program. XLA cannot know the trip
  count of train_loop's loop (it is an argument) and counts its body once: its figure is
  one step's (plus the epoch's permutation, negligible); pmap compiles one device's
  program, so it is multiplied by the device count.
"""
import dataclasses
import logging
import os
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from resnet_jax.data import pipeline
from resnet_jax.data.fake_images import load_fake_imagenet
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib
from resnet_jax.train import optim, setup, steps
from resnet_jax.train.state import create_train_state, seed_keys

log = logging.getLogger(__name__)

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets,
# which list them "with sparsity": the figures here are half of those. float32 is
# compared with the TF32 peak, the most a float32 convolution can reach on these parts.
# First matching device-kind substring wins, so the specific names come first.
PEAK_TFLOPS = (
    ('H100 PCIe', {'bfloat16': 756.5, 'float32': 378.0}, 'NVIDIA H100 PCIe datasheet'),
    ('H100 NVL', {'bfloat16': 835.5, 'float32': 417.5}, 'NVIDIA H100 NVL datasheet'),
    ('H200 NVL', {'bfloat16': 835.5, 'float32': 417.5}, 'NVIDIA H200 NVL datasheet'),
    ('H200', {'bfloat16': 989.4, 'float32': 494.7}, 'NVIDIA H200 SXM datasheet'),
    ('H100', {'bfloat16': 989.4, 'float32': 494.7}, 'NVIDIA H100 SXM5 datasheet'),
    ('A100', {'bfloat16': 312.0, 'float32': 156.0}, 'NVIDIA A100 datasheet'),
)


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
  conv_impl: str = 'auto'  # config.conv_impl: how the convolutions compute.


def workload_config(workload: Workload) -> ml_collections.ConfigDict:
  """The training config of `workload` (base_config defaults elsewhere), validated."""
  config = config_lib.base_config()
  for field in ('model', 'layout', 'image_size', 'batch_size', 'dtype', 'num_classes',
                'optimizer', 'steps_per_dispatch', 'conv_impl'):
    config[field] = getattr(workload, field)
  config.dataset = 'fake_imagenet'
  config_lib.validate_config(config)
  return config


def peak_tflops(device_kind: str, dtype: str) -> tuple[Optional[float], Optional[str]]:
  """(peak TFLOP/s, where the figure comes from) for a device kind; (None, None) if unknown."""
  for pattern, peaks, source in PEAK_TFLOPS:
    if pattern.lower() in device_kind.lower():
      kind = 'BF16' if dtype == 'bfloat16' else 'TF32'
      return peaks[dtype], f'{source}: {kind} tensor core, dense'
  return None, None


def compiled_cost(compiled) -> tuple[Optional[float], Optional[int]]:
  """(FLOPs, bytes of arguments + outputs + temporaries) of a compiled program, if known."""
  flops = None
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX returns one dict per program.
    analysis = analysis[0] if analysis else None
  if analysis and analysis.get('flops', -1) > 0:
    flops = float(analysis['flops'])
  memory = None
  stats = compiled.memory_analysis()
  if stats is not None:
    memory = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                 + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return flops, memory


def peak_memory_bytes(device) -> Optional[int]:
  """The device's peak bytes in use so far, where the backend reports it (not on CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # Backends without memory statistics raise or return None.
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return int(stats['peak_bytes_in_use'])


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


PROGRAMS = ('loop', 'step')


def default_program() -> str:
  """The program train.py runs on this backend (see steps.default_loop_on_device)."""
  return 'loop' if steps.default_loop_on_device() else 'step'


class FastPath:
  """train.py's training programs on a device-resident random split.

  Both programs come from `steps.make_step_functions` and are driven as the loop drives
  them, through `StepFunctions.train_resident`: 'loop' (`train_loop`) runs
  steps_per_dispatch steps per dispatch in a `lax.fori_loop`; 'step'
  (`train_resident_step`) dispatches each step of a chunk on its own. train.py picks
  'step' on CPU, where XLA leaves convolutions inside loops on its slow path, and 'loop'
  elsewhere.

  Args:
    workload: what to train.
    program: 'loop' or 'step'.
    model: a flax module to use instead of the one the workload names (tests).
    epoch_steps: steps per epoch of the resident split; rounded up to a multiple of
      steps_per_dispatch, because a chunk never crosses an epoch (as in the loop).
  """

  def __init__(self, workload: Workload, program: str, model=None, epoch_steps: int = 8,
               seed: int = 0):
    if program not in PROGRAMS:
      raise ConfigError(f'program={program!r}: expected one of {PROGRAMS}')
    config = workload_config(workload)
    self.workload, self.program = workload, program
    self.name = 'train_loop' if program == 'loop' else 'train_resident_step'
    # The loop driver hands out chunks of steps_per_dispatch steps; only 'loop' runs a
    # chunk in one dispatch.
    self.chunk_steps = workload.steps_per_dispatch
    self.steps_per_dispatch = self.chunk_steps if program == 'loop' else 1
    self.epoch_steps = _round_up(max(epoch_steps, 1), workload.steps_per_dispatch)
    model = model if model is not None else setup.build_model(config)
    size = workload.image_size
    data = load_fake_imagenet(image_size=size, num_train=self.epoch_steps * workload.batch_size,
                              num_test=1, num_classes=workload.num_classes, seed=seed)
    layout = pipeline.device_layout(workload.batch_size, len(data.train))
    self.devices = layout.local_devices
    tx, _ = optim.create_optimizer(config, self.epoch_steps)
    settings = steps.StepSettings.from_config(config)
    _, _, data_key = seed_keys(seed)
    self._fns = steps.make_step_functions(
        model, tx, settings, data_key=data_key, steps_per_epoch=self.epoch_steps,
        global_batch=layout.global_batch, per_device_batch=layout.per_device_batch,
        eval_global_batch=layout.global_batch, eval_per_device_batch=layout.per_device_batch,
        num_eval_batches=1, loop_on_device=program == 'loop', devices=self.devices)
    state = create_train_state(model, tx, (size, size, 3), seed)
    self.state = pipeline.replicate_on_devices(jax.tree.map(np.asarray, state), self.devices)
    self.resident = pipeline.replicate_on_devices(
        {'image': data.train.images, 'label': data.train.labels}, self.devices)
    self.device_index = pipeline.shard_leading_axis(layout.global_device_indices, self.devices)
    self.last_sums = None
    self.flops_per_step = None
    self.program_bytes = None

  def compile(self) -> float:
    """Traces and compiles the program; returns the seconds (later calls reuse it)."""
    args = (self.state, self.resident, self.device_index)
    start = time.perf_counter()
    if self.program == 'loop':
      count = np.full((len(self.devices),), self.chunk_steps, np.int32)
      compiled = self._fns.train_loop.lower(*args, count).compile()
    else:
      compiled = self._fns.train_resident_step.lower(*args).compile()
    seconds = time.perf_counter() - start
    flops, self.program_bytes = compiled_cost(compiled)
    if flops is not None:
      self.flops_per_step = flops * len(self.devices)
    return seconds

  def run(self, num_steps: int) -> None:
    """Runs `num_steps` (a multiple of chunk_steps) and waits for the device."""
    for _ in range(num_steps // self.chunk_steps):
      self.state, sums, done = self._fns.train_resident(self.state, self.resident,
                                                        self.device_index, self.chunk_steps)
      if done != self.chunk_steps:
        raise RuntimeError(f'{self.name}: a chunk ran {done} of {self.chunk_steps} steps')
      self.last_sums = sums[-1]
    jax.block_until_ready((self.state, self.last_sums))

  def steps_taken(self) -> int:
    """The state's step counter (the first device's)."""
    return int(np.asarray(self.state.step.addressable_shards[0].data)[0])


class BaselineState(train_state.TrainState):
  """Flax's TrainState with the batch statistics, as in Flax's BatchNorm guide."""
  batch_stats: Any


def straightforward_train_step(num_classes: int) -> Callable:
  """A plain Flax train step: (state, images, labels) -> (state, loss, accuracy)."""

  def train(state: BaselineState, images, labels):
    def loss_fn(params):
      logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                       images, train=True, mutable=['batch_stats'])
      one_hot = jax.nn.one_hot(labels, num_classes)
      loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), one_hot).mean()
      return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, loss, accuracy

  return train


class BaselinePath:
  """The straightforward step: jax.jit, one step per dispatch, batches from the host.

  Same model, batch and dtype as the fast path; the optimizer is optax's stock adam
  (or SGD with momentum) with the workload's learning rate; one device.
  """
  name = 'baseline'
  program = None
  chunk_steps = steps_per_dispatch = 1

  def __init__(self, workload: Workload, model=None, num_host_batches: int = 4, seed: int = 0):
    config = workload_config(workload)
    self.workload = workload
    self.devices = (jax.local_devices()[0],)
    model = model if model is not None else setup.build_model(config)
    size = workload.image_size
    data = load_fake_imagenet(image_size=size, num_train=num_host_batches * workload.batch_size,
                              num_test=1, num_classes=workload.num_classes, seed=seed)
    shape = (num_host_batches, workload.batch_size)
    # What a course notebook feeds: float images scaled to [0, 1] on the host.
    self.images = (data.train.images.astype(np.float32) / 255.0).reshape(shape + (size, size, 3))
    self.labels = data.train.labels.reshape(shape)
    if workload.optimizer == 'sgd':
      tx = optax.sgd(config.learning_rate, momentum=config.momentum)
    else:
      tx = optax.adam(config.learning_rate)
    variables = jax.jit(lambda: model.init(jax.random.key(seed),
                                           jnp.zeros((1, size, size, 3)), train=False))()
    self.state = BaselineState.create(apply_fn=model.apply, params=variables['params'],
                                      batch_stats=variables['batch_stats'], tx=tx)
    self._step = jax.jit(straightforward_train_step(workload.num_classes))
    self._position = 0
    self.last_metrics = None
    self.flops_per_step = None
    self.program_bytes = None

  def compile(self) -> float:
    start = time.perf_counter()
    compiled = self._step.lower(self.state, self.images[0], self.labels[0]).compile()
    seconds = time.perf_counter() - start
    self.flops_per_step, self.program_bytes = compiled_cost(compiled)
    return seconds

  def run(self, num_steps: int) -> None:
    for _ in range(num_steps):
      index = self._position % len(self.images)
      self._position += 1
      self.state, loss, accuracy = self._step(self.state, self.images[index], self.labels[index])
      self.last_metrics = (loss, accuracy)
    jax.block_until_ready((self.state, self.last_metrics))


def time_windows(paths: Sequence, num_steps: int, windows: int) -> dict:
  """{path name: [seconds per window]}, the paths' windows alternating."""
  times = {path.name: [] for path in paths}
  for _ in range(windows):
    for path in paths:
      start = time.perf_counter()
      path.run(num_steps)
      times[path.name].append(time.perf_counter() - start)
  return times


def _record(path, workload: Workload, window_seconds: list, num_steps: int,
            compile_seconds: float, peak_bytes: Optional[int]) -> dict:
  device = path.devices[0]
  seconds_per_step = statistics.median(window_seconds) / num_steps
  flops = path.flops_per_step
  achieved = flops / seconds_per_step / 1e12 if flops else None
  dtype = workload.dtype
  peak, source = peak_tflops(device.device_kind, dtype)
  return {
      'path': path.name,
      'train_py_default': path.program == default_program(),
      'model': workload.model, 'layout': workload.layout, 'image_size': workload.image_size,
      'batch_size': workload.batch_size, 'dtype': dtype, 'num_classes': workload.num_classes,
      'optimizer': workload.optimizer, 'steps_per_dispatch': path.steps_per_dispatch,
      'conv_impl': workload.conv_impl,
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
  """FastPaths for `programs` ('loop', 'step'; default: train.py's on this backend), then
  the BaselinePath if asked."""
  programs = programs or (default_program(),)
  paths = [FastPath(workload, program, model=model, epoch_steps=epoch_steps)
           for program in dict.fromkeys(programs)]
  if baseline:
    paths.append(BaselinePath(workload, model=model))
  return paths


def measure_paths(paths: Sequence, *, steps: int, windows: int = 5,
                  warmup_steps: int = 2) -> list[dict]:
  """Compiles, warms up and times `paths` (of one workload) in alternating windows.

  Args:
    steps: timed steps per window (rounded up to whole chunks of every path).
    windows: timed windows per path; the median is reported.
    warmup_steps: untimed steps after compiling (rounded up likewise; at least 1).

  Returns:
    One record per path. When the last path is the baseline, every other record also
    carries its ms_per_step and `speedup_vs_baseline`, the median of per-window ratios.
  """
  workload = paths[0].workload
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
    peaks[path.name] = peak_memory_bytes(path.devices[0])
  log.info('timing %d windows of %d steps per path', windows, num_steps)
  times = time_windows(paths, num_steps, windows)
  records = [_record(path, workload, times[path.name], num_steps, compile_seconds[path.name],
                     peaks[path.name]) for path in paths]
  if paths[-1].name == BaselinePath.name:
    base = times[BaselinePath.name]
    for record in records[:-1]:
      ratios = [b / f for f, b in zip(times[record['path']], base)]
      record['baseline_ms_per_step'] = records[-1]['ms_per_step']
      record['speedup_vs_baseline'] = statistics.median(ratios)
  return records


def measure(workload: Workload, *, steps: int, windows: int = 5, warmup_steps: int = 2,
            programs: Optional[Sequence[str]] = None, baseline: bool = False, model=None,
            epoch_steps: int = 8) -> list[dict]:
  """`build_paths` then `measure_paths`: one record per path, timed in one process.

  Args:
    programs: FastPath programs to time, 'loop' and/or 'step' (default: the one train.py
      runs on this backend).
    baseline: also time the straightforward Flax step (see measure_paths).
    model: a flax module to use instead of the one the workload names (tests).
    epoch_steps: batches in the device-resident split (see FastPath).
  """
  paths = build_paths(workload, programs=programs, baseline=baseline, model=model,
                      epoch_steps=epoch_steps)
  return measure_paths(paths, steps=steps, windows=windows, warmup_steps=warmup_steps)
