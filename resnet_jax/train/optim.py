"""Optimizers and learning-rate schedules from the config, through optax.

- adam: Keras's defaults (lr 1e-3, b1 0.9, b2 0.999, eps 1e-7); weight decay is decoupled
  (AdamW), since an L2 term inside Adam is rescaled away by the second moment.
- sgd: momentum (optionally Nesterov) with the paper's coupled L2 weight decay
  (gradient += wd * w), which is what "weight decay 1e-4" means in He et al.
Weight decay touches only parameters named 'kernel' (conv and dense weights), never
BatchNorm scales or any bias.
"""
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


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate as a function of the step.

  constant: learning_rate (after an optional linear warm-up).
  warmup_cosine: linear warm-up from 0 over warmup_epochs, then cosine decay to 0 at the
    last step.
  piecewise: learning_rate, multiplied by lr_decay at each step in lr_boundaries (the
    paper's 0.1 divided by 10 at 32k and 48k iterations); optional warm-up first.
  """
  base = float(config.learning_rate)
  if base <= 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate!r}: expected a positive number')
  total = config_lib.total_steps(config, steps_per_epoch)
  warmup = config_lib.warmup_steps(config, steps_per_epoch)
  name = config.schedule
  if name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1), end_value=0.0)
  if name == 'constant':
    main = optax.constant_schedule(base)
  elif name == 'piecewise':
    if not config.lr_boundaries:
      raise ConfigError("config.lr_boundaries=(): schedule 'piecewise' expects boundary steps")
    main = optax.piecewise_constant_schedule(
        base, {int(b): float(config.lr_decay) for b in config.lr_boundaries})
  else:
    raise ConfigError(f'config.schedule={name!r}: expected one of {config_lib.SCHEDULES}')
  if not warmup:
    return main
  # Warm-up counts toward the boundaries: the piecewise steps stay absolute.
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), lambda step: main(step + warmup)], [warmup])


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optax transformation, learning-rate schedule) for the config."""
  schedule = create_schedule(config, steps_per_epoch)
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(float(config.grad_clip_norm)))
  decay = float(config.weight_decay)
  name = config.optimizer
  if name == 'sgd':
    if decay:
      parts.append(optax.add_decayed_weights(decay, mask=kernel_mask))
    parts.append(optax.trace(decay=float(config.momentum), nesterov=bool(config.nesterov)))
  elif name == 'adam':
    parts.append(optax.scale_by_adam(b1=float(config.adam_b1), b2=float(config.adam_b2),
                                     eps=float(config.adam_eps)))
    if decay:
      # Decoupled: the decay is scaled by the learning rate but not by Adam's statistics.
      parts.append(optax.add_decayed_weights(decay, mask=kernel_mask))
  else:
    raise ConfigError(f'config.optimizer={name!r}: expected one of {config_lib.OPTIMIZERS}')
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  if config.freeze_backbone:
    # Only the classifier learns; the backbone's updates are zero (and its BN frozen).
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, head_labels)
  return tx, schedule


def head_labels(params):
  """'train' for the classifier `head`, 'frozen' for every other parameter."""
  return {name: jax.tree.map(lambda _, n=name: 'train' if n == 'head' else 'frozen', subtree)
          for name, subtree in params.items()}
