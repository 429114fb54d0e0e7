"""metrics.jsonl after a kill and a resume: one whole JSON object a line, each step once.

A killed writer leaves a prefix of the bytes it meant to write: its last line may be torn
anywhere, even just before the newline. The resumed run truncates the file to its restored
checkpoint and appends. The file is then read strictly (`read_jsonl(strict=True)`): the
default reader skips lines it cannot decode, as it must for a file still being written, so
it would hide a torn line kept by the resume, or two records glued onto one line.

The TensorBoard event file beside it is written by the same writer, record by record: each
a TFRecord frame with the checksums TensorBoard checks, as tensorboardX would frame it.
"""
import json
import os
import shutil
import struct

import pytest

import helpers as fx
from resnet_jax.errors import DatasetError
from resnet_jax.train import loop
from resnet_jax.train.metrics import JSONL_NAME, MetricWriter, read_jsonl, truncate_jsonl

STEPS = (4, 8, 12, 16, 20, 24)  # A record every 4 steps.
CHECKPOINTS = (0, 8, 16)  # 0: killed before the first checkpoint.


def _record(step):
  scalars = {'train_loss': 1.0 / step, 'train_accuracy': step / 32, 'learning_rate': 0.01}
  if step % 8 == 0:
    scalars['eval_accuracy'] = step / 48
  return scalars


def _write(workdir, steps):
  writer = MetricWriter(str(workdir), tensorboard=False)
  for step in steps:
    writer.write(step, _record(step))
  writer.close()


def _assert_one_record_a_line(path):
  """The file's lines, each one whole JSON object ended by a newline, steps rising."""
  with open(path) as f:
    lines = f.readlines()
  assert all(line.endswith('\n') for line in lines), lines
  records = [json.loads(line) for line in lines]
  assert all(isinstance(r, dict) for r in records)
  steps = [r['step'] for r in records]
  assert steps == sorted(set(steps)), steps  # Each step once, in order.
  assert read_jsonl(path, strict=True) == records
  return records


def _cuts(data: bytes):
  """Where a kill may leave the file: at, just after, inside, and just before the end of
  every line (the last: only its newline missing), and after the whole file."""
  cuts, start = set(), 0
  for end in [i + 1 for i, byte in enumerate(data) if byte == ord('\n')]:
    cuts.update({start, start + 1, (start + end) // 2, end - 1})
    start = end
  return sorted(cuts | {len(data)})


def test_a_resume_after_a_kill_anywhere_leaves_one_record_a_line_each_step_once(tmp_path):
  full = tmp_path / 'full'
  full.mkdir()
  _write(full, STEPS)
  data = (full / JSONL_NAME).read_bytes()
  want = {r['step']: r for r in read_jsonl(str(full / JSONL_NAME), strict=True)}
  for cut in _cuts(data):
    for checkpoint in CHECKPOINTS:
      workdir = tmp_path / f'cut{cut}_ckpt{checkpoint}'
      workdir.mkdir()
      path = str(workdir / JSONL_NAME)
      with open(path, 'wb') as f:
        f.write(data[:cut])  # What the killed run left.
      # Whole records (their newline aside) the kill left at or before the checkpoint.
      whole = [s for s in STEPS if s <= checkpoint
               and data.index(b'{"step": %d,' % s) + len(json.dumps(want[s])) <= cut]
      truncate_jsonl(path, checkpoint)  # What the resumed run does first...
      _write(workdir, [s for s in STEPS if s > checkpoint])  # ...then it appends.
      records = _assert_one_record_a_line(path)
      assert [r['step'] for r in records] == whole + [s for s in STEPS if s > checkpoint], (
          cut, checkpoint)
      assert records == [want[r['step']] for r in records]


def test_truncate_keeps_a_whole_record_that_lost_only_its_newline(tmp_path):
  """A crash that loses the file's unwritten tail can leave the checkpoint's own record
  without its newline; the resumed run does not write it again, so it is kept, ended."""
  _write(tmp_path, (4, 8))
  path = str(tmp_path / JSONL_NAME)
  with open(path, 'rb+') as f:
    f.truncate(os.path.getsize(path) - 1)
  assert truncate_jsonl(path, 8) == 0
  _write(tmp_path, (12,))
  assert [r['step'] for r in _assert_one_record_a_line(path)] == [4, 8, 12]


@pytest.mark.parametrize('text,line', [
    ('{"step": 4}\n{"step": 8, "train_lo', 2),  # Torn last line.
    ('{"step": 4}\n{"step": 8, "train_lo{"step": 12}\n', 2),  # Appended to a torn line.
    ('{"step": 4}\n{"step": 8}', 2),  # No newline at the end.
    ('{"step": 4}\n\n{"step": 8}\n', 2),  # Blank line.
    ('{"step": 4}\n{"loss": 1.0}\n', 2),  # No step.
    ('{"step": 4}\n[4]\n', 2),  # Not an object.
])
def test_the_strict_reader_names_the_line_the_default_one_skips(tmp_path, text, line):
  path = tmp_path / JSONL_NAME
  path.write_text(text)
  with pytest.raises(DatasetError, match=rf'{JSONL_NAME} line {line}:'):
    read_jsonl(str(path), strict=True)
  # The default reader, for a file a run may be writing, keeps the whole records.
  assert read_jsonl(str(path))[0] == {'step': 4}


def _run(workdir):
  return loop.train_and_evaluate(fx.tiny_config(), str(workdir), model=fx.TinyNet(),
                                 dataset=fx.make_dataset())


@pytest.mark.slow  # Whole training runs.
@pytest.mark.parametrize('kill', ['inside the step-12 record', "before step 8's newline"])
def test_a_resumed_training_run_leaves_one_record_a_line_each_step_once(tmp_path, kill):
  """train_and_evaluate resumed from the step-8 checkpoint after the kill left the file
  cut: the file equals the unbroken run's, read strictly (timings aside)."""
  reference = tmp_path / 'unbroken'
  _run(reference)
  workdir = tmp_path / 'resumed'
  shutil.copytree(reference, workdir)
  for step in (16, 24):  # Killed after the step-8 checkpoint.
    shutil.rmtree(workdir / 'checkpoints' / str(step))
  data = (reference / JSONL_NAME).read_bytes()
  start = data.index(b'{"step": 12,')
  cut = (start + data.index(b'\n', start)) // 2 if kill.startswith('inside') else start - 1
  (workdir / JSONL_NAME).write_bytes(data[:cut])
  result = _run(workdir)
  assert result['resumed_from'] == 8 and result['step'] == 24

  def without_timing(records):
    return [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in records]
  got = _assert_one_record_a_line(str(workdir / JSONL_NAME))
  assert without_timing(got) == without_timing(read_jsonl(str(reference / JSONL_NAME),
                                                          strict=True))


def test_event_records_are_framed_and_checksummed_as_tensorboard_reads_them(tmp_path):
  record_writer = pytest.importorskip('tensorboardX.record_writer')
  event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')
  writer = MetricWriter(str(tmp_path), tensorboard=True)
  writer.write(4, {'train_loss': 0.5, 'train_accuracy': 0.25, 'data_source': 'digits'})
  writer.write(8, {'eval_accuracy': float('nan')})
  writer.close()
  (name,) = os.listdir(tmp_path / 'tensorboard')
  assert name.startswith('events.out.tfevents.')
  data = (tmp_path / 'tensorboard' / name).read_bytes()
  events, offset = [], 0
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack('<Q', header)
    body = data[offset + 12:offset + 12 + length]
    crcs = struct.unpack('<I', data[offset + 8:offset + 12])[0], struct.unpack(
        '<I', data[offset + 12 + length:offset + 16 + length])[0]
    assert crcs == (record_writer.masked_crc32c(header), record_writer.masked_crc32c(body))
    events.append(event_pb2.Event.FromString(body))
    offset += 16 + length
  assert offset == len(data)  # Whole frames only.
  assert events[0].file_version == 'brain.Event:2'
  scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
  assert scalars[:2] == [(4, 'train_loss', 0.5), (4, 'train_accuracy', 0.25)]
  assert scalars[2][:2] == (8, 'eval_accuracy') and scalars[2][2] != scalars[2][2]  # NaN.
  assert len(scalars) == 3  # Text is not a scalar.

  # tensorboardX's own writer frames the same event into the same bytes.
  reference = tmp_path / 'reference'
  framed = record_writer.RecordWriter(str(reference))
  framed.write(events[1].SerializeToString())
  framed.close()
  first = 16 + len(events[0].SerializeToString())
  assert data[first:first + os.path.getsize(reference)] == reference.read_bytes()
