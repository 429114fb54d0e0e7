"""TensorBoard keeps what metrics.jsonl keeps: events reach the file at each flush, before
(and without) the writer being closed, as after a kill -9."""
import glob
import os
import struct

import pytest

from resnet_jax.train.metrics import MetricWriter

event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')


def _read_scalars(directory) -> dict:
  """{tag: [(step, value)]} from the TFRecord event files under `directory` (the record
  framing: length, its CRC, data, its CRC); a torn last record is ignored."""
  scalars = {}
  for path in sorted(glob.glob(os.path.join(directory, '**', 'events.out.tfevents.*'),
                               recursive=True)):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      start, end = offset + 12, offset + 12 + length
      if end + 4 > len(data):
        break
      event = event_pb2.Event.FromString(data[start:end])
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
      offset = end + 4
  return scalars


def test_flushed_events_are_on_disk_without_closing_the_writer(tmp_path):
  writer = MetricWriter(str(tmp_path), tensorboard=True)
  for step in (2, 4, 6, 8):
    writer.write(step, {'train_loss': step / 10})
  writer.flush()  # What the loop does at each checkpoint.
  writer.write(10, {'train_loss': 1.0})  # After the checkpoint: may be lost by a kill.
  # No close(): the process is "killed" here. Read what a resumed run would find.
  scalars = _read_scalars(str(tmp_path / 'tensorboard'))
  steps = [step for step, _ in scalars['train_loss']]
  assert steps[:4] == [2, 4, 6, 8]
  assert [round(v, 6) for _, v in scalars['train_loss'][:4]] == [0.2, 0.4, 0.6, 0.8]
  writer.close()
