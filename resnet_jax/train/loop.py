"""train_and_evaluate: the training loop, with exact resume, preemption and NaN handling.

The loop reads like Flax's examples/imagenet and big_vision's train.py: it asks the feed
(resnet_jax.train.feed: the input pipeline's batches onto the devices) to run a *chunk* of
steps, then runs each periodic action that is `due` at the chunk's end (log, evaluate,
checkpoint). A chunk ends at the next multiple of speed.steps_per_dispatch,
run.log_every_steps or run.checkpoint_every_steps, at the end of an epoch or of the run,
whichever comes first; so
chunk boundaries are a function of the step and a resumed run dispatches exactly the
chunks an unbroken one would. Chunk results stay on the device until a log, an evaluation
or a checkpoint needs them: the host then fetches the small metric sums of every pending
chunk, and raises if any step was non-finite, before anything is written. A checkpoint
holds the train sums not yet logged, so a resumed run logs what an unbroken one does.
SIGTERM/SIGINT stop the run at the next step or chunk, after saving (StopRequest); the
handlers are installed first, so that a signal during start-up (loading, compiling) only
sets the flag, checked between the start-up phases. Nothing is written to the workdir
until the first chunk is done (`_Run.commit`): a run that fails before (bad data, a full
disk, a non-finite first step) leaves it as it was.
"""
import contextlib
import dataclasses
import logging
import os
import time
from typing import Callable, Optional

import flax
import jax
import ml_collections
import numpy as np

from resnet_jax import weights
from resnet_jax.data.channel_stats import channel_stats
from resnet_jax.errors import NonFiniteLossError
from resnet_jax.train import (
  bn_recompute,
  checkpoint as checkpoint_lib,
  config as config_lib,
  config_changes,
  devices as devices_lib,
  feed as feed_lib,
  metrics as metrics_lib,
  optim,
  plots,
  profiling,
  progress,
  setup,
  steps,
  workdir as workdir_lib,
  workdir_claim,
)
from resnet_jax.train.run_shape import RunShape
from resnet_jax.train.state import (
  TrainState,
  abstract_train_state,
  create_train_state,
  state_from_host,
  state_to_host,
  unreplicate,
)
from resnet_jax.train.stop_request import StopRequest

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


def next_boundary(step: int, config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total: int) -> int:
  """Where the chunk starting at `step` ends (see the module docstring)."""
  periods = (config.speed.steps_per_dispatch, config.run.log_every_steps,
             config.run.checkpoint_every_steps, steps_per_epoch)
  return min([total] + [(step // p + 1) * p for p in periods])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, model=None,
                       dataset=None) -> dict:
  """Trains and evaluates the config's model, resuming from `workdir` if it holds a run.

  Args:
    config: see resnet_jax.train.config.base_config for the fields.
    workdir: checkpoints, metrics.jsonl, TensorBoard files, the plot and config.json.
    model: optional flax module to train instead of config.model (tests, custom nets).
    dataset: optional resnet_jax.data.Dataset instead of loading config.data (arrays a
      test hands over, any source): it goes through the same pipeline.

  Only one run at a time may use `workdir` (resnet_jax.train.workdir_claim); a run that
  ends before its first chunk of steps is done (rejected, failed, or stopped by a signal
  with nothing to save) removes whatever it added to the workdir. Resuming with a config
  or data (class names, identity) that change what the run computes is refused unless
  config.run.allow_changes_on_resume (resnet_jax.train.config_changes).

  Returns:
    The final metrics: step, train/eval loss and accuracy with the steps they were measured
    at (train_step, eval_step), data_source, checkpoint path, preempted (True when a signal
    stopped the run), stopped_before_start (True when that was before the first step, with
    nothing to save), resumed_from.

  Raises:
    WorkdirBusyError: another run holds the workdir.
    ConfigError, DatasetError, CheckpointError, NonFiniteLossError: see resnet_jax.errors.
  """
  config_lib.validate_config(config, check_model=model is None, check_dataset=dataset is None)
  # The signal handlers come first: a signal during start-up (loading, compiling) only sets
  # the flag, checked between the phases below, instead of raising inside XLA.
  with StopRequest() as stop, workdir_claim.WorkdirClaim(
      workdir, writer=jax.process_index() == 0) as claim:
    workdir_lib.prepare_workdir(workdir, config)
    saved_config = workdir_lib.load_saved_config(workdir, required=False)
    base = {'workdir': os.path.abspath(workdir)}
    if stop.requested_during_startup():
      return _stopped_before_start(stop, base, None)
    dataset = dataset if dataset is not None else setup.load_data(config.data)
    setup.check_data_fits(config, dataset)
    base.update(data_source=dataset.source, eval_split=dataset.eval_split)
    if stop.requested_during_startup():
      return _stopped_before_start(stop, base, None)
    model_name = (config.model.name if model is None else
                  f'{type(model).__name__} module (config.model.name {config.model.name})')
    model = model if model is not None else setup.build_model(config)
    shape = RunShape.from_config(config.train, config.run.eval_batch_size, len(dataset.train),
                                 len(dataset.test))
    tx, schedule = optim.create_optimizer(config.optim, shape.steps_per_epoch, shape.total_steps,
                                          freeze_backbone=config.finetune.freeze_backbone)
    checkpointer = checkpoint_lib.Checkpointer(workdir, config.run.keep_checkpoints)
    try:
      resuming = checkpointer.latest_step() is not None
      data = workdir_lib.data_record(dataset)
      recorded = workdir_lib.recorded_data(workdir, checkpointer) if resuming else []
      changes = config_changes.check_resume_config(
          workdir, saved_config if resuming else None, config, recorded, data)
      change = changes and (changes, saved_config, config_changes.data_changes(recorded, data)[0])
      start, host_state, meta = _restore_or_create(config, model, tx, checkpointer)
      if jax.process_index() == 0:
        resumed = checkpointer.path(start) if meta is not None else None
        log.info('%s', progress.startup_line(model_name, dataset.source,
                                             config.finetune.init_from, resumed))
      base.update(resumed_from=None if meta is None else start, total_steps=shape.total_steps)
      if stop.requested_during_startup():
        return _stopped_before_start(stop, base, checkpointer)
      if start >= shape.total_steps and 'final_metrics' in (meta or {}):
        claim.keep()
        return dict(meta['final_metrics'], **base, checkpoint=checkpointer.path(start),
                    preempted=False)
      run = _Run(config, workdir, dataset, shape, model, (tx, schedule), checkpointer)
      if stop.requested_during_startup():
        return _stopped_before_start(stop, base, checkpointer)

      def commit(open_writer):
        """The point of no return (_Run.commit): from here on the workdir holds this run."""
        with workdir_lib.start_writes(workdir, config, data, start, change or None):
          open_writer()
        claim.keep()

      try:
        result = run.train(host_state, start, (meta or {}).get('pending_train'), stop, commit)
      finally:
        run.feed.close()  # Stops the pipeline's worker processes.
      return dict(result, **base)
    finally:
      checkpointer.close()


def _stopped_before_start(stop: 'StopRequest', base: dict, checkpointer) -> dict:
  """The result of a run stopped during start-up: nothing was trained, nothing to save."""
  latest = checkpointer.latest_step() if checkpointer is not None else None
  log.warning('stopped by %s before the first training step; nothing to save%s', stop.describe(),
              '' if latest is None else f' (checkpoint {checkpointer.path(latest)} is unchanged)')
  return dict(base, step=0 if latest is None else latest, preempted=True,
              stopped_before_start=True,
              checkpoint=None if latest is None else checkpointer.path(latest))


def _restore_or_create(config, model, tx, checkpointer):
  """(start step, host state, checkpoint meta or None for a new run): the latest good
  checkpoint, else a new state (with pretrained weights if config.finetune.init_from)."""
  size, seed = config.data.image_size, config.train.seed
  image_shape = (size, size, 3)
  abstract = abstract_train_state(model, tx, image_shape, seed)
  restored = checkpointer.restore_latest(state_to_host_shapes(abstract))
  if restored is not None:
    start, state_dict, meta = restored
    log.info('resuming from checkpoint %s (step %d)', checkpointer.path(start), start)
    return start, state_from_host(abstract, state_dict), meta
  state = create_train_state(model, tx, image_shape, seed)
  if config.finetune.init_from:
    variables = weights.initial_variables(config.finetune, model, {
        'params': state.params, 'batch_stats': state.batch_stats})
    state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                          opt_state=tx.init(variables['params']))
  return 0, jax.tree.map(np.asarray, state), None


def state_to_host_shapes(abstract: TrainState) -> dict:
  """The checkpoint form of a state of ShapeDtypeStructs (for shape checks)."""
  return flax.serialization.to_state_dict(abstract)


class _Run:
  """One invocation of the loop: the feed, the writers and the periodic actions.

  Args:
    optimizer: (optax transformation, learning-rate schedule) from optim.create_optimizer.
  """

  def __init__(self, config, workdir, dataset, shape: RunShape, model, optimizer,
               checkpointer: checkpoint_lib.Checkpointer):
    tx, self.schedule = optimizer
    self.config, self.workdir, self.shape, self.checkpointer = config, workdir, shape, checkpointer
    self.is_writer = jax.process_index() == 0
    mean, std = (channel_stats(dataset.train) if config.data.preprocess == 'standardize'
                 else (None, None))
    self.extra_meta = {'preprocess_mean': mean, 'preprocess_std': std,
                       'class_names': list(dataset.class_names), 'data_source': dataset.source}
    settings = steps.StepSettings.from_config(config, mean, std)
    # The programs map over every process's devices (pmap's default): one mapped over this
    # process's devices alone would average gradients within the process only.
    fns = steps.make_step_functions(model, tx, settings)
    self.feed = feed_lib.Feed(fns, dataset, shape, setup.input_recipe(config, dataset.max_size),
                              workers=config.speed.data_workers,
                              chunk_on_device=config.speed.loop_on_device,
                              last_checkpoint=self._last_checkpoint)
    self.recompute_bn = lambda state: state
    if config.train.bn_recompute_batches:
      self.recompute_bn = bn_recompute.make_recompute(
          model, settings, self.feed, config.train.bn_recompute_batches)
    self.eval_period = shape.steps_per_epoch * config.train.eval_every_epochs
    self.pending = []  # Device-side metric sums of dispatches not yet checked.
    self.last_train = self.last_eval = None

  def train(self, host_state, start: int, pending_train: Optional[dict], stop: StopRequest,
            commit: Callable[[Callable[[], None]], None]) -> dict:
    """Trains from `start` to the last step, or until `stop` is requested; the run's result.
    `commit(open_writer)` writes the run's start into the workdir and keeps it (`commit`)."""
    config, total = self.config, self.shape.total_steps
    state = devices_lib.replicate_on_devices(host_state, self.shape.local_devices)
    self.sums = TrainSums(**pending_train) if pending_train else TrainSums()
    self._commit = commit
    step, preempted = start, False
    with self._writers(start), profiling.StepTrace(config.run.profile_steps,
                                                   self.workdir) as trace:
      while step < total:
        if stop.requested():
          preempted = True
          break
        end = next_boundary(step, config, self.shape.steps_per_epoch, total)
        trace.before(step)
        state, chunk_sums, done = self.feed.train(state, step, end - step, stop.requested_here)
        self.pending.extend(chunk_sums)
        step += done
        trace.after(step, state)
        self.bar.advance(done)
        if step < end:  # Stopped inside the chunk.
          preempted = True
          break
        self.commit()
        self.interval_steps += done
        log_now = self.due(step, config.run.log_every_steps)
        eval_now = self.due(step, self.eval_period)
        save_now = self.due(step, config.run.checkpoint_every_steps)
        if log_now or eval_now or save_now:
          self._collect_pending()
        record = self._log_train(step) if log_now else {}
        if eval_now:
          state = self.recompute_bn(state)
          record.update(self._evaluate(state, step))
        if record:
          self.writer.write(step, record)
        if save_now:
          self._save(state, step, evaluated=eval_now)
      self.commit()
      if preempted:
        self._save_stopped(state, step, stop.describe())
      elif step == start and self.last_eval is None:
        self._evaluate(state, step)  # Finished earlier, but its summary was lost.
      self.checkpointer.wait()
    if self.is_writer and not preempted:
      plots.plot_training_curves(self.writer.path, os.path.join(self.workdir, plots.PLOT_NAME),
                                 title=f'{config.model.name} on {config.data.name}')
    return dict(self._summary(step), checkpoint=self.checkpointer.path(step),
                preempted=preempted)

  def _last_checkpoint(self) -> Optional[tuple[str, int]]:
    """(path, step) of the last checkpoint on disk (a save under way finished first), or
    None: named by the error a dead data worker ends the run with."""
    self.checkpointer.wait()
    step = self.checkpointer.latest_step()
    return None if step is None else (self.checkpointer.path(step), step)

  def due(self, step: int, period: int) -> bool:
    """Whether an action repeated every `period` steps runs at `step` (and at the end)."""
    return step % period == 0 or step == self.shape.total_steps

  def commit(self) -> None:
    """The point of no return, once the first chunk is done or a stop is to be saved: its
    steps must be finite, then workdir.start_writes and the metric writer. Any error before
    leaves the workdir as it was (a new one is removed: workdir_claim)."""
    if self.writer is not None:
      return
    self._collect_pending()

    def open_writer():
      self.writer = metrics_lib.MetricWriter(self.workdir, enabled=self.is_writer,
                                             tensorboard=self.config.run.tensorboard)

    self._commit(open_writer)

  @contextlib.contextmanager
  def _writers(self, start: int):
    """The progress bar of this invocation and the metric writer (opened by `commit`),
    closed on the way out."""
    self.writer = None
    self.bar = progress.ProgressBar(self.shape.total_steps, start,
                                    enabled=self.config.run.progress_bar and self.is_writer)
    self.interval_start, self.interval_steps = time.perf_counter(), 0
    try:
      yield
    finally:
      self.bar.close()
      if self.writer is not None:
        self.writer.close()

  def _log_train(self, step: int) -> dict:
    """The training part of the log line at `step`; starts the next interval's sums."""
    elapsed = time.perf_counter() - self.interval_start
    speed = self.interval_steps * self.shape.train.global_batch / max(elapsed, 1e-9)
    self.last_train, self.last_train_step = self.sums.means(), step
    record = dict(self.last_train, learning_rate=float(self.schedule(step - 1)),
                  images_per_sec=speed)
    if self.config.train.nan_policy == 'skip':
      record['skipped_steps'] = self.sums.steps - self.sums.finite_steps
    self.bar.show(self.last_train['train_loss'], self.last_train['train_accuracy'], speed)
    self.sums = TrainSums()
    self.interval_start, self.interval_steps = time.perf_counter(), 0
    return record

  def _evaluate(self, state, step: int) -> dict:
    self.last_eval, self.last_eval_step = self.feed.evaluate(state), step
    return self.last_eval

  def _summary(self, step: int) -> dict:
    """The result at `step`, with the latest train and eval metrics and the steps they were
    measured at (train_step, eval_step: earlier than `step` after a stop request)."""
    summary = dict(step=step, epoch=step / self.shape.steps_per_epoch)
    if self.last_train is not None:
      summary.update(self.last_train, train_step=self.last_train_step)
    if self.last_eval is not None:
      summary.update(self.last_eval, eval_step=self.last_eval_step)
    return summary

  def _collect_pending(self) -> None:
    """Adds the pending dispatches' sums to self.sums; NonFiniteLossError if a step was
    non-finite (under nan_policy='raise')."""
    for chunk in self.pending:
      chunk = unreplicate(chunk)
      first_bad = int(chunk['first_nonfinite_step'])
      if first_bad >= 0 and self.config.train.nan_policy == 'raise':
        latest = self.checkpointer.latest_step()
        raise NonFiniteLossError(
            f'non-finite loss, gradients or updated state at training step {first_bad + 1} '
            f'(the update from step {first_bad}); stopped without writing a checkpoint from '
            f'that state. Latest '
            f'checkpoint: {self.checkpointer.path(latest) if latest is not None else "none"}. '
            "Try a lower config.optim.learning_rate, config.optim.grad_clip_norm, or "
            "config.train.nan_policy='skip'.")
      self.sums.add(chunk)
    self.pending.clear()

  def _save(self, state, step: int, evaluated: bool) -> None:
    """Checkpoints `state` with the pending train sums (for exact resume), the evaluation
    accuracy if `evaluated` at this step, and the final metrics at the last step."""
    meta = dict(self.extra_meta, pending_train=dataclasses.asdict(self.sums))
    if step == self.shape.total_steps:
      meta['final_metrics'] = self._summary(step)
    accuracy = self.last_eval['eval_accuracy'] if evaluated else None
    self.checkpointer.save(step, state_to_host(unreplicate(state)), meta, eval_accuracy=accuracy)
    # TensorBoard keeps what metrics.jsonl keeps: its buffered events up to this checkpoint
    # reach the file now, so that a kill -9 and a resume lose none of them.
    self.writer.flush()

  def _save_stopped(self, state, step: int, reason: str) -> None:
    """Saves where a stop request left the run (unless that step is saved already)."""
    self._collect_pending()
    if step != self.checkpointer.latest_step():
      self._save(state, step, evaluated=False)
    self.checkpointer.wait()
    self.bar.close()  # The line below starts on a line of its own, not after the bar.
    log.warning('stopped by %s at step %d; checkpoint saved to %s', reason, step,
                self.checkpointer.path(step))
