"""RunShape: the shapes of one training run on this process's devices, computed once."""
import dataclasses
from typing import Optional

import jax
import ml_collections

from resnet_jax.data import layout as layout_lib
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib


@dataclasses.dataclass(frozen=True)
class RunShape:
  """How a run's batches are laid out and how many steps it takes.

  Attributes:
    train: this process's part of a training batch (resnet_jax.data.layout.BatchLayout).
    eval: likewise for evaluation batches (the last one is padded).
    local_devices: this process's devices, on which every pmapped program runs.
    steps_per_epoch: full training batches per epoch (the last partial batch is dropped).
    total_steps: training steps of the whole run.
    num_eval_batches: evaluation batches covering every evaluation example once.
  """
  train: layout_lib.BatchLayout
  eval: layout_lib.BatchLayout
  local_devices: tuple
  steps_per_epoch: int
  total_steps: int
  num_eval_batches: int

  @classmethod
  def from_config(cls, train_config: ml_collections.ConfigDict, eval_batch_size: Optional[int],
                  num_train: int, num_eval: int) -> 'RunShape':
    """The shape config.train asks for on splits of these sizes (evaluation batches of
    `eval_batch_size`, None: the training batch); ConfigError naming the field if a batch
    cannot be split over the devices or is larger than the training split."""
    devices = tuple(jax.local_devices())
    train = batch_layout(train_config.batch_size, devices, 'train.batch_size', num_train)
    evaluation = batch_layout(eval_batch_size or train_config.batch_size, devices,
                              'run.eval_batch_size')
    per_epoch = layout_lib.steps_per_epoch(num_train, train.global_batch)
    return cls(train=train, eval=evaluation, local_devices=devices, steps_per_epoch=per_epoch,
               total_steps=config_lib.total_steps(train_config, per_epoch),
               num_eval_batches=layout_lib.num_eval_batches(num_eval, evaluation.global_batch))


def batch_layout(global_batch: int, devices: tuple, field: str,
                 num_train: Optional[int] = None) -> layout_lib.BatchLayout:
  """This process's part of a global batch spread over every process's devices; ConfigError
  naming config.`field` if it cannot be split so.

  Args:
    num_train: size of the training split; a batch larger than it is an error (an epoch
      would have no step). None skips that check (evaluation batches are padded).
  """
  processes, local = jax.process_count(), len(devices)
  count = processes * local
  if global_batch < 1:
    raise ConfigError(f'config.{field}={global_batch}: expected a positive batch size')
  if global_batch % count:
    raise ConfigError(
        f'config.{field}={global_batch} is not divisible by the {count} devices '
        f'({processes} process(es) x {local} local); expected a multiple of {count}')
  if num_train is not None and global_batch > num_train:
    raise ConfigError(
        f'config.{field}={global_batch} is larger than the training split ({num_train} '
        f'examples); expected at most {num_train}, since the last partial batch is dropped')
  first = jax.process_index() * local
  return layout_lib.BatchLayout(global_batch, tuple(range(first, first + local)),
                                global_batch // count)
