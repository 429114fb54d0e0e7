"""GrainFeed: the feed of streamed datasets (prepared shards or an image folder).

Batches come from the Grain pipeline (resnet_jax.data.grain_pipeline), decoded and
augmented on the host in config.speed.data_workers processes, and reach the devices a few
steps
ahead (pipeline.prefetch_to_devices); the steps are the `*_fed` programs, so chunking, NaN
checks and stop requests work as with the host feed. The pipeline's position is the step:
`train` starts a new pipeline at `step` whenever it is not where the last call ended (the
first call, a resume), and nothing else is saved for an exact resume.
"""
from typing import Optional

import jax
import ml_collections

from resnet_jax.data import grain_pipeline, host_augment, pipeline
from resnet_jax.data.streamed import StreamedDataset
from resnet_jax.train import steps
from resnet_jax.train.feeds import FedFeed, eval_metrics
from resnet_jax.train.run_shape import RunShape


def batch_layout(layout: pipeline.DeviceLayout) -> grain_pipeline.BatchLayout:
  """The JAX-free description of a DeviceLayout the Grain workers use."""
  return grain_pipeline.BatchLayout(layout.global_batch,
                                    tuple(int(i) for i in layout.global_device_indices),
                                    layout.per_device_batch)


def augmentation(config: ml_collections.ConfigDict,
                 max_size: Optional[int] = None) -> grain_pipeline.Augmentation:
  """The config's training augmentation of streamed data, made on the host, except the
  Inception crop's resize where config.speed.crop_resize leaves it to the device.

  Args:
    max_size: the stored images' shorter side at most (StreamedDataset.max_size); None (a
      raw folder, whose pictures have any size) resizes on the host.
  """
  canvas = 0
  if config.data.augment.inception_crop and max_size and resize_on_device(config):
    canvas = host_augment.canvas_size(max_size, int(config.data.image_size))
  return grain_pipeline.Augmentation(inception_crop=bool(config.data.augment.inception_crop),
                                     crop_padding=int(config.data.augment.crop_padding),
                                     flip=bool(config.data.augment.flip), canvas_size=canvas)


def resize_on_device(config: ml_collections.ConfigDict) -> bool:
  """Whether config.speed.crop_resize puts the crop's resize in the train step ('auto':
  off CPU backends; on CPU the step and the decoding processes share the same cores)."""
  choice = config.speed.crop_resize
  return choice == 'device' or (choice == 'auto' and jax.default_backend() != 'cpu')


class GrainFeed(FedFeed):
  """Streams a StreamedDataset through the Grain pipeline, one dispatch per step.

  Args:
    fns: the run's programs.
    dataset: the streamed splits.
    shape: the run's shape.
    config: train.seed, data.image_size, data.augment, speed.crop_resize and
      speed.data_workers are read.
  """

  def __init__(self, fns: steps.StepFunctions, dataset: StreamedDataset, shape: RunShape,
               config: ml_collections.ConfigDict):
    self.fns, self.dataset, self.shape = fns, dataset, shape
    self.seed, self.image_size = int(config.train.seed), int(config.data.image_size)
    self.workers = int(config.speed.data_workers)
    self.augmentation = augmentation(config, dataset.max_size)
    self._host_batches = None

  def _start(self, step: int) -> None:
    self.close()
    shape = self.shape
    dataset = grain_pipeline.train_dataset(
        self.dataset.train.source, batch_layout(shape.train), shape.steps_per_epoch,
        self.seed, self.image_size, self.augmentation, step, shape.total_steps - step)
    self._host_batches = grain_pipeline.iterate(dataset, len(shape.local_devices), self.workers)
    self._batches = pipeline.prefetch_to_devices(self._host_batches, shape.local_devices)

  def evaluate(self, state) -> dict:
    dataset = grain_pipeline.eval_dataset(self.dataset.test.source, batch_layout(self.shape.eval),
                                          self.image_size)
    host_batches = grain_pipeline.iterate(dataset, len(self.shape.local_devices), self.workers)
    try:
      batches = pipeline.prefetch_to_devices(host_batches, self.shape.local_devices)
      return eval_metrics([self.fns.eval_batch_fed(state, batch) for batch in batches])
    finally:
      host_batches.close()

  def close(self) -> None:
    """Stops the training pipeline's workers (a later `train` starts a new pipeline)."""
    if self._host_batches is not None:
      self._batches.close()
      self._host_batches.close()
    self._batches = self._host_batches = self._next_step = None
