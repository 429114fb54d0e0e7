"""Runs experiments/train.py (same flags) and records what this process read and wrote.

Used by test_multiprocess.py: `python _multiprocess_worker.py RECORD_JSON [train.py flags]`.
The record holds this process's index and device layout, whether its metric writer was
enabled, and for the first training batches it drew from the host pipeline (or the
streaming pipeline) their example positions in the global batch and a hash of their images
(for the streaming pipeline, one hash per local device).

The network is helpers.TinyNet instead of the config's ResNet-20: the test is
about processes, devices and data, and compiling a ResNet three times would take most of
its time.
"""
import hashlib
import json
import sys

import helpers
from experiments import train
from resnet_jax.data import grain_pipeline, pipeline
from resnet_jax.train import metrics as metrics_lib, setup

RECORDED_BATCHES = 3


def main():
  record_path, train_flags = sys.argv[1], sys.argv[2:]
  record = {'layouts': [], 'batches': [], 'metric_writer_enabled': []}

  device_layout = pipeline.device_layout

  def recording_layout(*args, **kwargs):
    layout = device_layout(*args, **kwargs)
    record['process_index'] = layout.process_index
    record['layouts'].append({'global_batch': layout.global_batch,
                              'device_indices': layout.global_device_indices.tolist()})
    return layout

  train_batches = pipeline.train_batches

  def recording_batches(*args, **kwargs):
    for index, batch in enumerate(train_batches(*args, **kwargs)):
      if index < RECORDED_BATCHES:
        record['batches'].append({
            'example_id': batch['example_id'].tolist(),
            'images_sha256': hashlib.sha256(batch['image'].tobytes()).hexdigest()})
      yield batch

  writer_class = metrics_lib.MetricWriter

  class RecordingWriter(writer_class):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      record['metric_writer_enabled'].append(self.enabled)

  iterate = grain_pipeline.iterate

  def recording_iterate(*args, **kwargs):  # The streaming feed's batches (dataset 'images').
    for batch in iterate(*args, **kwargs):
      if 'example_id' in batch and len(record['batches']) < RECORDED_BATCHES:
        record['batches'].append({
            'example_id': batch['example_id'].tolist(),
            'device_sha256': [hashlib.sha256(x.tobytes()).hexdigest() for x in batch['image']]})
      yield batch

  setup.build_model = lambda config: helpers.TinyNet(num_classes=config.model.num_classes)
  grain_pipeline.iterate = recording_iterate
  pipeline.device_layout = recording_layout
  pipeline.train_batches = recording_batches
  # In-memory data go through the host feed (whose batches are recorded above), never
  # resident on the devices.
  pipeline.fits_on_devices = lambda *args, **kwargs: False
  metrics_lib.MetricWriter = RecordingWriter
  try:
    code = train.main(train_flags)
  finally:
    with open(record_path, 'w') as f:
      json.dump(record, f)
  sys.exit(code)


if __name__ == '__main__':
  main()
