"""The benchmark machinery on a tiny model: record fields, equivalences, the CLI and its sweep.

No timing assertions: the machine is shared, so only sanity (positive, finite) is checked.
Multi-step dispatch against single-step dispatch is covered by tests/test_train_loop.py;
here the benchmark's loop-free 'resident_step' program is checked against train_chunk.
"""
import json
import math
import os
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.train import benchmarking

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'experiments'))
import benchmark as benchmark_script  # noqa: E402  pylint: disable=g-import-not-at-top

SIZE, CLASSES = 8, 3


class TinyNet(nn.Module):
  """conv -> BN -> relu -> mean -> Dense: compiles in a second."""
  num_classes: int = CLASSES

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.Conv(8, (3, 3), use_bias=False, name='conv')(x)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='bn')(y)
    return nn.Dense(self.num_classes, name='head')(nn.relu(y).mean((1, 2)))


def _workload(**overrides):
  fields = dict(model='resnet18', layout='keras', image_size=SIZE, batch_size=8,
                num_classes=CLASSES, steps_per_dispatch=3)
  fields.update(overrides)
  return benchmarking.Workload(**fields)


@pytest.fixture(scope='module')
def records():
  return benchmarking.measure(_workload(), steps=3, windows=2, warmup_steps=1,
                              programs=('chunk', 'step'), baseline=True, model=TinyNet())


def _positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_records_hold_every_field_with_sane_values(records):
  assert [r['path'] for r in records] == ['train_chunk', 'resident_step', 'baseline']
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
  # XLA counts the chunk's loop body once; all three programs do one step's arithmetic.
  chunk, step, baseline = (r['flops_per_step'] for r in records)
  assert chunk == pytest.approx(step, rel=0.05)
  assert chunk == pytest.approx(baseline, rel=0.15)


def test_resident_step_trains_exactly_like_train_chunk():
  chunk = benchmarking.FastPath(_workload(), 'chunk', model=TinyNet(), epoch_steps=4)
  step = benchmarking.FastPath(_workload(), 'step', model=TinyNet(), epoch_steps=4)
  assert chunk.epoch_steps == step.epoch_steps == 6  # Rounded up to whole dispatches.
  chunk.run(9)  # Crosses an epoch boundary at step 6, as the loop's chunks do.
  step.run(9)
  assert int(chunk.state.step[0]) == int(step.state.step[0]) == 9
  for a, b in zip(jax.tree.leaves(chunk.params()), jax.tree.leaves(step.params())):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  last_chunk, last_step = chunk.metric_sums(), step.metric_sums()
  assert int(last_chunk['steps']) == 3 and int(last_step['steps']) == 1
  assert int(last_chunk['finite_steps']) == 3


def test_peak_table_uses_dense_datasheet_figures():
  assert benchmarking.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16')[0] == 989.4
  assert benchmarking.peak_tflops('NVIDIA H100 80GB HBM3', 'float32')[0] == 494.7
  assert benchmarking.peak_tflops('NVIDIA H100 PCIe', 'bfloat16')[0] == 756.5
  assert benchmarking.peak_tflops('NVIDIA H200', 'bfloat16')[0] == 989.4
  value, source = benchmarking.peak_tflops('NVIDIA H100 NVL', 'bfloat16')
  assert value == 835.5 and 'NVL' in source and 'dense' in source
  assert benchmarking.peak_tflops('cpu', 'float32') == (None, None)


def test_unknown_names_are_config_errors():
  with pytest.raises(ConfigError, match=r'config\.model=.resnet51'):
    benchmarking.workload_config(_workload(model='resnet51'))
  with pytest.raises(ConfigError, match=r"program='scan'"):
    benchmarking.FastPath(_workload(), 'scan', model=TinyNet())


def test_cli_prints_json_lines_and_writes_the_sweep(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(benchmarking.setup, 'build_model', lambda config: TinyNet())
  out = tmp_path / 'sweep'
  code = benchmark_script.main([
      '--model', 'resnet18', '--layout', 'keras', '--image-size', str(SIZE),
      '--num-classes', str(CLASSES), '--sweep', '4,8', '--steps', '2', '--windows', '1',
      '--warmup-steps', '1', '--steps-per-dispatch', '2', '--out', str(out)])
  assert code == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [(r['path'], r['batch_size']) for r in lines] == [('train_chunk', 4), ('train_chunk', 8)]
  assert all(r['steps_per_dispatch'] == 2 and _positive(r['img_per_sec']) for r in lines)
  table = (out / 'sweep.md').read_text()
  rows = [line for line in table.splitlines() if line.startswith('| train_chunk')]
  assert len(rows) == 2 and '| 4 |' in rows[0] and '| 8 |' in rows[1]
  assert (out / 'sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_reports_a_bad_model_name_and_exits_2(capsys):
  code = benchmark_script.main(['--model', 'resnet51', '--steps', '1'])
  assert code == 2
  assert 'config.model' in capsys.readouterr().err
