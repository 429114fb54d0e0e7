"""The benchmark machinery on a tiny model: record fields, step accounting, the CLI, the sweep.

No timing assertions: the machine is shared, so only sanity (positive, finite) is checked.
The two programs (a chunk of steps in one dispatch, one step per dispatch) are checked to
train the same run here; whole runs with either are compared in tests/test_train_loop.py.
"""
import json
import math
import os
import re
import tempfile

import jax
import numpy as np
import pytest

import helpers
from experiments import benchmark as benchmark_script
from resnet_jax.errors import ConfigError
from resnet_jax.perf import benchmarking, hardware, throughput

# Compiles and times several train steps: outside the fast loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

SIZE, CLASSES = 8, 3


def _workload(**overrides):
  fields = dict(model='resnet18', layout='keras', image_size=SIZE, batch_size=8,
                num_classes=CLASSES, steps_per_dispatch=3)
  fields.update(overrides)
  return benchmarking.Workload(**fields)


@pytest.fixture(scope='module')
def paths():
  """train_chunk (3 steps per dispatch), train_step and the plain Flax baseline, built once."""
  return benchmarking.build_paths(_workload(), programs=('chunk', 'step'), baseline=True,
                                  model=helpers.TinyNet(num_classes=CLASSES), epoch_steps=4)


@pytest.fixture(scope='module')
def records(paths):
  return benchmarking.measure_paths(paths, steps=3, windows=2, warmup_steps=1)


def _positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_records_hold_every_field_with_sane_values(records):
  assert [r['path'] for r in records] == ['train_chunk', 'train_step', 'baseline']
  assert [r['steps_per_dispatch'] for r in records] == [3, 1, 1]
  device = jax.local_devices()[0]
  for record in records:
    json.loads(json.dumps(record, allow_nan=False))  # Valid JSON, no NaN.
    assert (record['model'], record['image_size'], record['batch_size'],
            record['dtype']) == ('resnet18', SIZE, 8, 'float32')
    for key in ('img_per_sec', 'ms_per_step', 'compile_seconds', 'flops_per_step',
                'achieved_tflops', 'program_memory_bytes'):
      assert _positive(record[key]), (record['path'], key, record[key])
    assert record['img_per_sec'] == pytest.approx(8 * 1e3 / record['ms_per_step'])
    assert record['ms_per_step'] == pytest.approx(np.median(record['window_ms_per_step']))
    assert len(record['window_ms_per_step']) == 2 and record['timed_steps_per_window'] == 3
    assert record['achieved_tflops'] == pytest.approx(
        record['flops_per_step'] / (record['ms_per_step'] / 1e3) / 1e12)
    assert record['device']['kind'] == device.device_kind
    assert record['backend'] == device.platform == jax.default_backend()
    assert record['jax_version'] == jax.__version__
    if device.platform == 'cpu':  # No documented peak, no memory statistics.
      assert record['peak_tflops'] is None and record['fraction_of_peak'] is None
  assert records[0]['device']['count'] == jax.local_device_count()
  for record in records[:2]:
    assert _positive(record['speedup_vs_baseline'])
    assert record['baseline_ms_per_step'] == records[2]['ms_per_step']


def test_flops_per_step_is_one_step_in_every_program(records):
  # XLA counts the chunk's loop body once; both programs run train.py's step, the baseline
  # the same network's plain step.
  chunk, step, baseline = (r['flops_per_step'] for r in records)
  assert chunk == pytest.approx(step, rel=0.05)
  assert chunk == pytest.approx(baseline, rel=0.15)
  assert step == pytest.approx(baseline, rel=0.15)


def test_every_path_ran_the_warmup_and_every_window(records, paths):
  # 1 warm-up step rounded up to a chunk of 3, then 2 windows of 3 steps.
  chunk, step, baseline = paths
  assert chunk.steps_taken() == step.steps_taken() == 3 + 2 * 3
  assert baseline.steps_taken() == 3 + 2 * 3
  assert all(np.isfinite(np.asarray(m)) for m in baseline.last_metrics)
  for path in (chunk, step):
    sums = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], path.last_sums)
    assert int(sums['steps']) == path.steps_per_dispatch and int(sums['finite_steps']) >= 1
    assert math.isfinite(float(sums['loss_sum'])) and float(sums['loss_sum']) > 0
  assert [r['train_py_default'] for r in records] == [
      jax.default_backend() != 'cpu', jax.default_backend() == 'cpu', False]


def test_every_path_trains_the_same_run(records, paths):
  # Same seed, same data, same steps: chunks of 3 steps in one dispatch and one step per
  # dispatch reach one state.
  first = lambda path: jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0],
                                    path.state.params)
  chunk, step = (first(path) for path in paths[:2])
  assert paths[0].steps_taken() == paths[1].steps_taken() > 0
  for x, y in zip(jax.tree.leaves(chunk), jax.tree.leaves(step), strict=True):
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)


def test_sweep_writes_a_table_row_per_record_and_a_png(records, tmp_path):
  written = throughput.write_sweep(records, str(tmp_path / 'sweep'))
  table = open(written['table']).read()
  assert 'resnet18 (keras), 8x8, float32' in table
  for record in records:
    row = next(line for line in table.splitlines() if line.startswith(f"| {record['path']} |"))
    assert f"{record['img_per_sec']:,.1f}" in row
  assert open(written['plot'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_peak_table_uses_dense_datasheet_figures():
  assert hardware.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16')[0] == 989.4
  assert hardware.peak_tflops('NVIDIA H100 80GB HBM3', 'float32')[0] == 494.7
  assert hardware.peak_tflops('NVIDIA H100 PCIe', 'bfloat16')[0] == 756.5
  assert hardware.peak_tflops('NVIDIA H200', 'bfloat16')[0] == 989.4
  value, source = hardware.peak_tflops('NVIDIA H100 NVL', 'bfloat16')
  assert value == 835.5 and 'NVL' in source and 'dense' in source
  assert hardware.peak_tflops('cpu', 'float32') == (None, None)


def test_unknown_names_are_config_errors():
  with pytest.raises(ConfigError, match=r'config\.model\.name=.resnet51'):
    benchmarking.workload_config(_workload(model='resnet51'))
  with pytest.raises(ConfigError, match=r"program='scan'"):
    benchmarking.TrainingPath(_workload(), 'scan', model=helpers.TinyNet(num_classes=CLASSES))


def test_cli_measures_each_batch_size_prints_json_and_writes_the_sweep(
    records, tmp_path, capsys, monkeypatch):
  calls = []

  def fake_measure(workload, **kwargs):  # The measurement itself is tested above.
    calls.append((workload, kwargs))
    return [dict(r, batch_size=workload.batch_size) for r in records]

  monkeypatch.setattr(benchmarking, 'measure', fake_measure)
  out = tmp_path / 'sweep'
  code = benchmark_script.main([
      '--model', 'resnet18', '--layout', 'keras', '--image-size', '8', '--dtype', 'bfloat16',
      '--sweep', '4,16', '--steps', '5', '--windows', '3', '--steps-per-dispatch', '2',
      '--program', 'auto,chunk', '--baseline', '--out', str(out)])
  assert code == 0
  assert [c[0] for c in calls] == [
      benchmarking.Workload('resnet18', 'keras', 8, size, 'bfloat16', 1000, 'adam', 2)
      for size in (4, 16)]
  auto = 'step' if jax.default_backend() == 'cpu' else 'chunk'
  assert calls[0][1] == dict(steps=5, windows=3, warmup_steps=2, programs=[auto, 'chunk'],
                             baseline=True, epoch_steps=8)
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r['batch_size'] for r in lines] == [4] * len(records) + [16] * len(records)
  table = (out / 'sweep.md').read_text()
  assert len([line for line in table.splitlines() if line.startswith('| train_chunk')]) == 2
  assert (out / 'sweep.png').stat().st_size > 0


def _can_write_in(directory: str) -> bool:
  try:
    os.rmdir(tempfile.mkdtemp(dir=directory))
  except OSError:
    return False
  return True


@pytest.fixture
def unwritable_dir(tmp_path):
  """A directory this process cannot write in: read-only by its mode, or, for root (whom
  modes do not stop), /sys, where nobody can make files."""
  directory = tmp_path / 'read_only'
  directory.mkdir()
  directory.chmod(0o555)
  try:
    if not _can_write_in(str(directory)):
      yield str(directory)
    elif os.path.isdir('/sys') and not _can_write_in('/sys'):
      yield '/sys'
    else:
      pytest.skip('no directory here that this process cannot write in')
  finally:
    directory.chmod(0o755)


def test_cli_says_an_unwritable_out_before_measuring(unwritable_dir, capsys, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('measured although --out cannot be written')

  monkeypatch.setattr(benchmarking, 'measure', refuse)
  before = sorted(os.listdir(unwritable_dir))
  out = os.path.join(unwritable_dir, 'sweep')
  code = benchmark_script.main(['--model', 'resnet18', '--sweep', '4,16', '--out', out])
  stdout, err = capsys.readouterr()
  assert code == 2 and stdout == ''
  assert re.fullmatch(rf'error: StorageError: {re.escape(out)}: cannot be written \((Permission '
                      r'denied|Operation not permitted|Read-only file system); [^;]+ free on its '
                      r'filesystem\); expected a path this process may write\n', err), err
  assert sorted(os.listdir(unwritable_dir)) == before


def test_cli_refuses_out_without_sweep_before_measuring(tmp_path, capsys, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('measured although --out would be ignored')

  monkeypatch.setattr(benchmarking, 'measure', refuse)
  code = benchmark_script.main(['--out', str(tmp_path / 'bench')])
  stdout, err = capsys.readouterr()
  assert code == 2 and stdout == ''
  assert err.startswith('error: UsageError: --out=') and 'expected --sweep' in err
  assert err.count('\n') == 1 and not os.listdir(tmp_path)


def test_cli_reports_a_bad_model_name_and_exits_2(capsys):
  code = benchmark_script.main(['--model', 'resnet51', '--steps', '1'])
  assert code == 2
  assert 'config.model.name' in capsys.readouterr().err
