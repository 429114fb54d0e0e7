"""train_and_evaluate: the training loop, with exact resume, preemption and NaN handling.

The loop dispatches *chunks* of steps. A chunk ends at the next multiple of
steps_per_dispatch, log_every_steps or checkpoint_every_steps, at the end of an epoch or
of the run, whichever comes first; so chunk boundaries are a function of the step and a
resumed run dispatches exactly the chunks an unbroken one would. Chunk results stay on the
device until a log, an evaluation or a checkpoint needs them: the host then fetches the
small metric sums of every pending chunk, and raises if any step was non-finite, before
anything is written.
"""
import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Optional

import flax
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from resnet_jax import weights
from resnet_jax.data import augment as augment_lib
from resnet_jax.data import pipeline
from resnet_jax.errors import NonFiniteLossError
from resnet_jax.train import bn_recompute
from resnet_jax.train import checkpoint as checkpoint_lib
from resnet_jax.train import config as config_lib
from resnet_jax.train import metrics as metrics_lib
from resnet_jax.train import optim, plots, setup, steps, workdir as workdir_lib
from resnet_jax.train.progress import ProgressBar
from resnet_jax.train.state import (TrainState, abstract_train_state, create_train_state,
                                    seed_keys, state_from_host, state_to_host, unreplicate)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainSums:
  """Host-side sums of the train metrics since the last log line (saved in checkpoints)."""
  loss_sum: float = 0.0
  accuracy_sum: float = 0.0
  finite_steps: int = 0
  steps: int = 0

  def add(self, chunk: dict) -> None:
    self.loss_sum += float(chunk['loss_sum'])
    self.accuracy_sum += float(chunk['accuracy_sum'])
    self.finite_steps += int(chunk['finite_steps'])
    self.steps += int(chunk['steps'])

  def means(self) -> dict:
    count = self.finite_steps
    return {'train_loss': self.loss_sum / count if count else float('nan'),
            'train_accuracy': self.accuracy_sum / count if count else float('nan')}


class StopRequest:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each dispatch."""

  def __init__(self):
    self.signal_number: Optional[int] = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in (signal.SIGTERM, signal.SIGINT):
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def _handle(self, number, _frame):
    self.signal_number = number

  def __exit__(self, *exc):
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def describe(self) -> str:
    if self.signal_number is None:
      return 'a stop request from another process'
    return signal.Signals(self.signal_number).name

  def requested_here(self) -> bool:
    """A stop request seen by this process alone; asked between steps, only in
    single-process runs (all processes of a run must stop at the same step)."""
    return jax.process_count() == 1 and self.signal_number is not None

  def requested(self) -> bool:
    local = self.signal_number is not None
    if jax.process_count() == 1:
      return local
    # Every process must stop at the same step to save collectively.
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))


def next_boundary(step: int, config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total: int) -> int:
  """Where the chunk starting at `step` ends (see the module docstring)."""
  periods = (config.steps_per_dispatch, config.log_every_steps, config.checkpoint_every_steps,
             steps_per_epoch)
  return min([total] + [(step // p + 1) * p for p in periods])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, model=None,
                       dataset=None) -> dict:
  """Trains and evaluates the config's model, resuming from `workdir` if it holds a run.

  Args:
    config: see resnet_jax.train.config.base_config for the fields.
    workdir: checkpoints, metrics.jsonl, TensorBoard files, the plot and config.json.
    model: optional flax module to train instead of config.model (tests, custom nets).
    dataset: optional resnet_jax.data.Dataset instead of loading config.dataset.

  Returns:
    The final metrics: step, train/eval loss and accuracy, data_source, checkpoint path,
    preempted (True when a signal stopped the run after saving), resumed_from.
  """
  config_lib.validate_config(config, check_model=model is None, check_dataset=dataset is None)
  workdir_lib.prepare_workdir(workdir, config)
  dataset = dataset if dataset is not None else setup.load_data(config)
  setup.check_data_fits(config, dataset)
  model = model if model is not None else setup.build_model(config)
  is_writer = jax.process_index() == 0

  layout = pipeline.device_layout(config.batch_size, len(dataset.train))
  eval_layout = pipeline.device_layout(config_lib.eval_batch_size(config), None,
                                       field='eval_batch_size')
  per_epoch = pipeline.steps_per_epoch(len(dataset.train), layout.global_batch)
  total = config_lib.total_steps(config, per_epoch)
  tx, schedule = optim.create_optimizer(config, per_epoch)
  mean, std = (augment_lib.channel_stats(dataset.train.images)
               if config.preprocess == 'standardize' else (None, None))
  settings = steps.StepSettings.from_config(config, mean, std)

  image_shape = dataset.image_shape
  abstract = abstract_train_state(model, tx, image_shape, config.seed)
  checkpointer = checkpoint_lib.Checkpointer(workdir, config.keep_checkpoints)
  try:
    restored = checkpointer.restore_latest(state_to_host_shapes(abstract))
    meta = {}
    if restored is None:
      state = create_train_state(model, tx, image_shape, config.seed)
      if config.init_from:
        variables = weights.initial_variables(config, model, {
            'params': state.params, 'batch_stats': state.batch_stats})
        state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                              opt_state=tx.init(variables['params']))
      state = jax.tree.map(np.asarray, state)
      start = 0
    else:
      start, state_dict, meta = restored
      state = state_from_host(abstract, state_dict)
      log.info('resuming from checkpoint %s (step %d)', checkpointer.path(start), start)
    workdir_lib.save_config(workdir, config)
    if is_writer:
      metrics_lib.truncate_jsonl(os.path.join(workdir, metrics_lib.JSONL_NAME), start)
    base = {'data_source': dataset.source, 'workdir': os.path.abspath(workdir),
            'resumed_from': start if restored else None, 'total_steps': total}
    if start >= total and 'final_metrics' in meta:
      return dict(meta['final_metrics'], **base, checkpoint=checkpointer.path(start),
                  preempted=False)
    run = _Run(config, workdir, model, tx, schedule, settings, dataset, layout, eval_layout,
               per_epoch, total, checkpointer, is_writer,
               extra_meta={'preprocess_mean': mean, 'preprocess_std': std,
                           'class_names': list(dataset.class_names),
                           'data_source': dataset.source})
    result = run.train(state, start, meta.get('pending_train'))
    return dict(result, **base)
  finally:
    checkpointer.close()


def state_to_host_shapes(abstract: TrainState) -> dict:
  """The checkpoint form of a state of ShapeDtypeStructs (for shape checks)."""
  return flax.serialization.to_state_dict(abstract)


class _Run:
  """One invocation of the loop: devices, programs and writers for a given start."""

  def __init__(self, config, workdir, model, tx, schedule, settings, dataset, layout,
               eval_layout, per_epoch, total, checkpointer, is_writer, extra_meta):
    self.config, self.workdir, self.schedule = config, workdir, schedule
    self.dataset, self.layout, self.eval_layout = dataset, layout, eval_layout
    self.per_epoch, self.total, self.checkpointer = per_epoch, total, checkpointer
    self.is_writer, self.extra_meta = is_writer, extra_meta
    devices = layout.local_devices
    self.devices = devices
    _, _, self.data_key = seed_keys(config.seed)
    self.num_eval_batches = pipeline.num_eval_batches(len(dataset.test), eval_layout.global_batch)
    self.fns = steps.make_step_functions(
        model, tx, settings, data_key=self.data_key, steps_per_epoch=per_epoch,
        global_batch=layout.global_batch, per_device_batch=layout.per_device_batch,
        eval_global_batch=eval_layout.global_batch,
        eval_per_device_batch=eval_layout.per_device_batch,
        num_eval_batches=self.num_eval_batches, loop_on_device=config.loop_on_device)
    self.device_index = pipeline.shard_leading_axis(layout.global_device_indices, devices)
    self.resident = config.data_on_device and pipeline.fits_on_devices(
        [dataset.train, dataset.test], devices)
    if config.data_on_device and not self.resident:
      log.warning('the dataset does not fit on the devices; feeding batches from the host')
    self.batch_statistics = None
    if config.bn_recompute_batches:
      self.batch_statistics = bn_recompute.make_batch_statistics_fn(model, settings, devices)
    if self.resident:
      self.train_data = pipeline.replicate_on_devices(
          {'image': dataset.train.images, 'label': dataset.train.labels}, devices)
      self.eval_data = pipeline.replicate_on_devices(
          pipeline.pad_split(dataset.test, eval_layout.global_batch), devices)

  def recompute_bn(self, state):
    """`state` with BatchNorm statistics re-estimated, if the config asks for it."""
    if self.batch_statistics is None:
      return state
    batches = bn_recompute.statistics_batches(self.dataset.train, self.layout, self.data_key,
                                              self.config.bn_recompute_batches)
    return bn_recompute.recompute_batch_stats(
        state, self.batch_statistics, pipeline.prefetch_to_devices(batches, self.devices))

  def evaluate(self, state) -> dict:
    if self.resident:
      outputs = self.fns.eval_resident(state, self.eval_data, self.device_index)
    else:
      batches = pipeline.prefetch_to_devices(
          pipeline.eval_batches(self.dataset.test, self.eval_layout), self.devices)
      outputs = [self.fns.eval_batch(state, batch) for batch in batches]
    sums = {'loss_sum': 0.0, 'correct_sum': 0.0, 'count': 0.0}
    for out in outputs:
      out = unreplicate(out)
      sums = {k: sums[k] + float(out[k]) for k in sums}
    count = float(sums['count'])
    return {'eval_loss': float(sums['loss_sum']) / count,
            'eval_accuracy': float(sums['correct_sum']) / count}

  def train(self, host_state, start: int, pending_train: Optional[dict]) -> dict:
    config, total, per_epoch = self.config, self.total, self.per_epoch
    state = pipeline.replicate_on_devices(host_state, self.devices)
    sums = TrainSums(**pending_train) if pending_train else TrainSums()
    writer = metrics_lib.MetricWriter(self.workdir, enabled=self.is_writer,
                                      tensorboard=config.tensorboard)
    bar = ProgressBar(total, start, enabled=config.progress_bar and self.is_writer)
    host_batches = None
    if not self.resident:
      host_batches = pipeline.prefetch_to_devices(
          pipeline.train_batches(self.dataset.train, self.layout, self.data_key, start),
          self.devices)
    pending = []  # Device-side metric sums of chunks not yet checked.
    step, last_eval, last_train = start, None, None
    interval_start, interval_steps = time.perf_counter(), 0
    preempted = False
    with StopRequest() as stop:
      try:
        while step < total:
          if stop.requested():
            preempted = True
            break
          end = next_boundary(step, config, per_epoch, total)
          if self.resident:
            state, chunks, done = self.fns.train_resident(
                state, self.train_data, self.device_index, end - step, stop.requested_here)
            pending.extend(chunks)
          else:
            done = 0
            while done < end - step and not stop.requested_here():
              if done >= 2:
                jax.block_until_ready(pending[-2])  # Keep at most two steps in flight.
              state, chunk = self.fns.train_batch(state, next(host_batches))
              pending.append(chunk)
              done += 1
          if step + done < end:  # Stopped inside the chunk.
            step += done
            bar.advance(done)
            preempted = True
            break
          bar.advance(end - step)
          interval_steps += end - step
          step = end
          log_now = step % config.log_every_steps == 0 or step == total
          epoch_end = step % per_epoch == 0
          eval_now = step == total or (epoch_end and (step // per_epoch)
                                       % config.eval_every_epochs == 0)
          save_now = step % config.checkpoint_every_steps == 0 or step == total
          if not (log_now or eval_now or save_now):
            continue
          self._check_pending(pending, sums)
          record = {}
          if log_now:
            elapsed = time.perf_counter() - interval_start
            speed = interval_steps * self.layout.global_batch / max(elapsed, 1e-9)
            last_train = sums.means()
            record.update(last_train, learning_rate=float(self.schedule(step - 1)),
                          images_per_sec=speed)
            if config.nan_policy == 'skip':
              record['skipped_steps'] = sums.steps - sums.finite_steps
            bar.show(last_train['train_loss'], last_train['train_accuracy'], speed)
            sums = TrainSums()
            interval_start, interval_steps = time.perf_counter(), 0
          if eval_now:
            state = self.recompute_bn(state)
            last_eval = self.evaluate(state)
            record.update(last_eval)
          if record:
            writer.write(step, record)
          if save_now:
            final = None
            if step == total:
              final = dict(step=step, epoch=step / per_epoch, **(last_train or {}),
                           **(last_eval or {}))
            self._save(state, step, sums, last_eval if eval_now else None, final)
        if step == start and last_eval is None and not preempted:
          last_eval = self.evaluate(state)  # Finished earlier, but its summary was lost.
        if preempted:
          self._check_pending(pending, sums)
          if step != self.checkpointer.latest_step():
            self._save(state, step, sums, None, None)
          self.checkpointer.wait()
          log.warning('stopped by %s at step %d; checkpoint saved to %s', stop.describe(), step,
                      self.checkpointer.path(step))
        else:
          self.checkpointer.wait()
      finally:
        bar.close()
        writer.close()
    if self.is_writer and not preempted:
      plots.plot_training_curves(writer.path, os.path.join(self.workdir, plots.PLOT_NAME),
                                 title=f'{config.model} on {config.dataset}')
    result = dict(step=step, epoch=step / per_epoch, **(last_train or {}), **(last_eval or {}))
    return dict(result, checkpoint=self.checkpointer.path(step), preempted=preempted)

  def _check_pending(self, pending: list, sums: TrainSums) -> None:
    """Fetches the pending chunks' sums; NonFiniteLossError if a step was non-finite."""
    for chunk in pending:
      chunk = unreplicate(chunk)
      first_bad = int(chunk['first_nonfinite_step'])
      if first_bad >= 0 and self.config.nan_policy == 'raise':
        latest = self.checkpointer.latest_step()
        raise NonFiniteLossError(
            f'non-finite loss, gradients or updated state at training step {first_bad + 1} '
            f'(the update from step {first_bad}); stopped without writing a checkpoint from '
            f'that state. Latest '
            f'checkpoint: {self.checkpointer.path(latest) if latest is not None else "none"}. '
            "Try a lower config.learning_rate, config.grad_clip_norm, or "
            "config.nan_policy='skip'.")
      sums.add(chunk)
    pending.clear()

  def _save(self, state, step: int, sums: TrainSums, eval_metrics: Optional[dict],
            final: Optional[dict]) -> None:
    host = state_to_host(unreplicate(state))
    meta = dict(self.extra_meta, pending_train=dataclasses.asdict(sums))
    if final is not None:
      meta['final_metrics'] = final
    accuracy = None if eval_metrics is None else eval_metrics['eval_accuracy']
    self.checkpointer.save(step, host, meta, eval_accuracy=accuracy)
