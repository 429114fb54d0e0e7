"""Optimizers and learning-rate schedules from the config's `optim` group, through optax.

- adam: Keras's defaults (lr 1e-3, b1 0.9, b2 0.999, eps 1e-7); weight decay is decoupled
  (AdamW), since an L2 term inside Adam is rescaled away by the second moment.
- sgd: momentum (optionally Nesterov) with the paper's coupled L2 weight decay
  (gradient += wd * w), which is what "weight decay 1e-4" means in He et al.
Weight decay touches only parameters named 'kernel' (conv and dense weights), never
BatchNorm scales or any bias.
"""
import math

import jax
import ml_collections
import optax

from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib


def kernel_mask(params):
  """A pytree of bools: True exactly for leaves named 'kernel'."""
  def is_kernel(path, _):
    last = path[-1]
    return getattr(last, 'key', getattr(last, 'name', None)) == 'kernel'
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def create_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> optax.Schedule:
  """The learning rate as a function of the step, from the `optim` group.

  constant: learning_rate (after an optional linear warm-up).
  warmup_cosine: linear warm-up from 0 over warmup_epochs, then cosine decay to 0 at
    total_steps (the run's last step).
  piecewise: learning_rate, multiplied by lr_decay at each step in lr_boundaries (the
    paper's 0.1 divided by 10 at 32k and 48k iterations); optional warm-up first.
  """
  base = float(optim.learning_rate)
  if not math.isfinite(base) or base <= 0:
    raise ConfigError(f'config.optim.learning_rate={optim.learning_rate!r}: expected a finite '
                      'positive number')
  warmup = config_lib.warmup_steps(optim, steps_per_epoch)
  name = optim.schedule
  if name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=0.0)
  if name == 'constant':
    main = optax.constant_schedule(base)
  elif name == 'piecewise':
    if not optim.lr_boundaries:
      raise ConfigError("config.optim.lr_boundaries=(): optim.schedule 'piecewise' expects "
                        'boundary steps')
    main = optax.piecewise_constant_schedule(
        base, {int(b): float(optim.lr_decay) for b in optim.lr_boundaries})
  else:
    raise ConfigError(f'config.optim.schedule={name!r}: expected one of {config_lib.SCHEDULES}')
  if not warmup:
    return main
  # Warm-up counts toward the boundaries: the piecewise steps stay absolute.
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), lambda step: main(step + warmup)], [warmup])


def create_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int,
                     *, freeze_backbone: bool = False
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optax transformation, learning-rate schedule) for the `optim` group of a config.

  Args:
    optim: config.optim.
    steps_per_epoch: training steps per epoch (warmup_epochs are counted in them).
    total_steps: the run's training steps (warmup_cosine decays to 0 there); see
      config.total_steps.
    freeze_backbone: config.finetune.freeze_backbone: only the classifier `head` learns.
  """
  schedule = create_schedule(optim, steps_per_epoch, total_steps)
  parts = []
  if optim.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(float(optim.grad_clip_norm)))
  decay = float(optim.weight_decay)
  name = optim.name
  if name == 'sgd':
    if decay:
      parts.append(optax.add_decayed_weights(decay, mask=kernel_mask))
    parts.append(optax.trace(decay=float(optim.momentum), nesterov=bool(optim.nesterov)))
  elif name == 'adam':
    parts.append(optax.scale_by_adam(b1=float(optim.adam_b1), b2=float(optim.adam_b2),
                                     eps=float(optim.adam_eps)))
    if decay:
      # Decoupled: the decay is scaled by the learning rate but not by Adam's statistics.
      parts.append(optax.add_decayed_weights(decay, mask=kernel_mask))
  else:
    raise ConfigError(f'config.optim.name={name!r}: expected one of {config_lib.OPTIMIZERS}')
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  if freeze_backbone:
    # Only the classifier learns; the backbone's updates are zero (and its BN frozen).
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, head_labels)
  return tx, schedule


def head_labels(params):
  """'train' for the classifier `head`, 'frozen' for every other parameter."""
  return {name: jax.tree.map(lambda _, n=name: 'train' if n == 'head' else 'frozen', subtree)
          for name, subtree in params.items()}
