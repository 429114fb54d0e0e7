"""A `jax.profiler` trace of chosen training steps (config.run.profile_steps).

`run.profile_steps = (first, last)` traces the steps first..last-1 into `<workdir>/profile`
(with several processes, `<workdir>/profile/process<i>`, one trace per process):
`plugins/profile/<time>/<host>.xplane.pb` for TensorBoard's profile plugin
(`tensorboard --logdir <workdir>`) and, next to it, `perfetto_trace.json.gz` for
https://ui.perfetto.dev.
The loop dispatches steps in chunks (speed.steps_per_dispatch), so the trace starts at the
first chunk that begins at or after `first` and covers every chunk up to the one that
reaches `last`. Tracing never changes what a run computes; `()` (the default) traces
nothing.
"""
import logging
import os

import jax

PROFILE_DIR = 'profile'

log = logging.getLogger(__name__)


def trace_dir(workdir: str) -> str:
  """Where this process's trace goes."""
  if jax.process_count() == 1:
    return os.path.join(workdir, PROFILE_DIR)
  return os.path.join(workdir, PROFILE_DIR, f'process{jax.process_index()}')


class StepTrace:
  """Context manager around the training loop: `before(step)` ahead of each dispatch,
  `after(step, state)` once it returned; the trace stops at `last`, or on the way out."""

  def __init__(self, profile_steps, workdir: str):
    self.first, self.last = tuple(profile_steps) or (0, 0)
    self.workdir = workdir
    self.tracing = False

  def __enter__(self):
    return self

  def before(self, step: int) -> None:
    if not self.tracing and self.first <= step < self.last:
      self.directory = trace_dir(self.workdir)
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.tracing, self.started_at = True, step

  def after(self, step: int, state) -> None:
    if self.tracing and step >= self.last:
      self._stop(step, state)

  def __exit__(self, *exc):
    if self.tracing:
      self._stop(None, None)

  def _stop(self, step, state) -> None:
    if state is not None:
      jax.block_until_ready(state)  # The traced steps' device work belongs in the trace.
    jax.profiler.stop_trace()
    self.tracing = False
    ended = '' if step is None else f' to step {step}'
    log.info('profiler trace from step %d%s written to %s', self.started_at, ended,
             self.directory)
