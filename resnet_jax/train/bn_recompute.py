"""Re-estimating BatchNorm's running statistics with the current weights ("precise BN").

Why: running averages with momentum 0.99 (the Keras default the course uses) trail weights
that Adam moves quickly, so early in a short run a model evaluated with them can sit at
chance while its training accuracy climbs (BENCHMARKS.md, section "signs_resnet50.py (the
main job)", has the SIGNS figures with and without re-estimation).
Training never reads the running statistics (train mode normalises with the batch's), so
replacing them changes no parameter and no later training step: only evaluation, and the
model that checkpoints and predict.py carry. Wu & Johnson, "Rethinking 'Batch' in
BatchNorm" (2021), section 3, and pycls/detectron2's PreciseBN do the same.

The statistics are the mean over a few training batches of each batch's mean and variance,
with the weights as they are; the batches are fixed by the run's seed (their own order, each
example's evaluation view: pipeline.statistics_dataset), so a resumed run re-estimates
exactly what an unbroken one does.
"""
import dataclasses
from typing import Callable

import jax
from flax import linen as nn

from resnet_jax.errors import ConfigError
from resnet_jax.models.layouts import get_layout
from resnet_jax.train.steps import AXIS, StepSettings, device_mean, network_input


def batch_statistics_model(model: nn.Module) -> nn.Module:
  """The same network with BatchNorm momentum 0: a train-mode forward pass then leaves each
  layer's running statistics equal to that batch's mean and variance."""
  if not hasattr(model, 'layout'):
    raise ConfigError(f'config.train.bn_recompute_batches > 0 needs a model built by '
                      f'resnet_jax.models.create_model (with a layout); got '
                      f'{type(model).__name__}')
  return model.clone(layout=dataclasses.replace(get_layout(model.layout), bn_momentum=0.0))


def make_batch_statistics_fn(model: nn.Module, settings: StepSettings, devices=None) -> Callable:
  """pmapped (state, batch) -> this global batch's BatchNorm statistics (averaged over the
  devices): the train step's forward pass, with BatchNorm's momentum 0."""
  stats_model = batch_statistics_model(model)

  def batch_statistics(state, batch):
    _, updated = stats_model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                                   network_input(batch, settings), train=True,
                                   mutable=['batch_stats'])
    return device_mean(updated['batch_stats'])

  return jax.pmap(batch_statistics, axis_name=AXIS, devices=devices)


def make_recompute(model: nn.Module, settings: StepSettings, feed, num_batches: int,
                   devices=None) -> Callable:
  """state -> state with batch_stats re-estimated over `num_batches` batches of the feed's
  training split (the same batches at every call: feed.statistics_batches)."""
  batch_statistics = make_batch_statistics_fn(model, settings, devices)
  return lambda state: recompute_batch_stats(state, batch_statistics,
                                             feed.statistics_batches(num_batches))


def recompute_batch_stats(state, batch_statistics: Callable, batches) -> object:
  """`state` (replicated) with its batch_stats re-estimated over the device batches."""
  mean = None
  for count, batch in enumerate(batches, start=1):
    stats = batch_statistics(state, batch)
    # A running mean, so that layers whose statistics are frozen keep them bit for bit.
    mean = stats if mean is None else jax.tree.map(
        lambda m, s, n=count: m + (s - m) / n, mean, stats)
  return state if mean is None else state.replace(batch_stats=mean)

