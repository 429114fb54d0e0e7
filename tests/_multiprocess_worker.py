"""Runs experiments/train.py (same flags) and records what this process read and wrote.

Used by test_multiprocess.py and test_images_processes.py:
`python _multiprocess_worker.py RECORD_JSON [train.py flags]`. The record holds this
process's index and batch layouts, whether its metric writer was enabled, and for the first
training batches the input pipeline gave it (any source: arrays or streamed images) their
labels and one hash of the images per local device.

The network is helpers.TinyNet instead of the config's ResNet-20: the tests are
about processes, devices and data, and compiling a ResNet three times would take most of
their time.
"""
import hashlib
import json
import sys

import helpers
from experiments import train
from resnet_jax.data import pipeline
from resnet_jax.train import metrics as metrics_lib, run_shape, setup

RECORDED_BATCHES = 3


def main():
  record_path, train_flags = sys.argv[1], sys.argv[2:]
  record = {'layouts': [], 'batches': [], 'metric_writer_enabled': []}

  batch_layout = run_shape.batch_layout

  def recording_layout(global_batch, devices, field, *args, **kwargs):
    import jax
    layout = batch_layout(global_batch, devices, field, *args, **kwargs)
    record['process_index'] = jax.process_index()
    record['layouts'].append({'field': field, 'global_batch': layout.global_batch,
                              'device_indices': list(layout.device_indices),
                              'per_device': layout.per_device})
    return layout

  writer_class = metrics_lib.MetricWriter

  class RecordingWriter(writer_class):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      record['metric_writer_enabled'].append(self.enabled)

  iterate = pipeline.iterate

  def recording_iterate(*args, **kwargs):  # The feed's host batches, [devices, per_device, ...].
    for batch in iterate(*args, **kwargs):
      training = 'mask' not in batch  # Evaluation batches carry a mask.
      if training and len(record['batches']) < RECORDED_BATCHES:
        record['batches'].append({
            'label': batch['label'].tolist(),
            'device_sha256': [hashlib.sha256(x.tobytes()).hexdigest() for x in batch['image']]})
      yield batch

  setup.build_model = lambda config: helpers.TinyNet(num_classes=config.model.num_classes)
  pipeline.iterate = recording_iterate
  run_shape.batch_layout = recording_layout
  metrics_lib.MetricWriter = RecordingWriter
  try:
    code = train.main(train_flags)
  finally:
    with open(record_path, 'w') as f:
      json.dump(record, f)
  sys.exit(code)


if __name__ == '__main__':
  main()
