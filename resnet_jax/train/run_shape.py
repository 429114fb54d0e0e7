"""RunShape: the shapes of one training run, computed once and passed whole."""
import dataclasses

import ml_collections

from resnet_jax.data import pipeline
from resnet_jax.train import config as config_lib


@dataclasses.dataclass(frozen=True)
class RunShape:
  """How a run's batches are laid out and how many steps it takes.

  Attributes:
    train: the training batch over processes and local devices (global and per-device
      batch, local devices).
    eval: the evaluation batch likewise (the last evaluation batch is padded).
    steps_per_epoch: full training batches per epoch (the last partial batch is dropped).
    total_steps: training steps of the whole run.
    num_eval_batches: evaluation batches covering every test example once.
  """
  train: pipeline.DeviceLayout
  eval: pipeline.DeviceLayout
  steps_per_epoch: int
  total_steps: int
  num_eval_batches: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_train: int,
                  num_test: int) -> 'RunShape':
    """The shape a config asks for on splits of these sizes; ConfigError (naming the
    field) if a batch cannot be split over the devices or is larger than the train split."""
    train = pipeline.device_layout(config.train.batch_size, num_train)
    evaluation = pipeline.device_layout(config_lib.eval_batch_size(config), None,
                                        field='run.eval_batch_size')
    per_epoch = pipeline.steps_per_epoch(num_train, train.global_batch)
    return cls(train=train, eval=evaluation, steps_per_epoch=per_epoch,
               total_steps=config_lib.total_steps(config.train, per_epoch),
               num_eval_batches=pipeline.num_eval_batches(num_test, evaluation.global_batch))

  @property
  def local_devices(self) -> tuple:
    """This process's devices, on which every pmapped program runs."""
    return self.train.local_devices
