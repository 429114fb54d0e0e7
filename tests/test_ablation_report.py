"""Tables and figures of a sweep, from runs this test writes (no training)."""
import csv
import json
import math
import os

import pytest

from resnet_jax import storage
from resnet_jax.ablation import plots, results, sweep
from resnet_jax.errors import ConfigError, DatasetError

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'

# Final training error of each (model, seed), as the test's fake runs end.
FINAL_ERRORS = {
    ('cifar_plain20', 0): 0.02, ('cifar_plain20', 1): 0.04,
    ('cifar_plain56', 0): 0.40, ('cifar_plain56', 1): 0.50,
    ('cifar_resnet20', 0): 0.01, ('cifar_resnet20', 1): 0.03,
    ('cifar_resnet56', 0): 0.00, ('cifar_resnet56', 1): 0.02,
}


def write_fake_run(workdir, model, seed, final_error, time_s=10.0):
  """A finished run: 100 steps logged every 10; the error falls linearly to `final_error`."""
  run = os.path.join(workdir, model, f'seed{seed}')
  os.makedirs(run)
  with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
    for step in range(10, 101, 10):
      error = 0.9 + (final_error - 0.9) * step / 100
      record = {'step': step, 'train_loss': 2 * error, 'train_accuracy': 1 - error,
                'learning_rate': 0.1, 'images_per_sec': 100.0}
      if step % 50 == 0:
        record.update(eval_loss=2.5 * error, eval_accuracy=1 - 1.5 * error)
      f.write(json.dumps(record) + '\n')
  kind, depth = results.describe_model(model)
  # Per-layer norms that shrink toward the input in plain nets, flat in residual ones.
  layers = {}
  for stage in (1, 2, 3):
    scale = 0.1 ** (3 - stage) if kind == 'plain' else 1.0
    layers.update({f'stage{stage}_block1/conv1': scale, f'stage{stage}_block1/bn1': scale})
  layers.update({'stem_conv': 0.5, 'head': 2.0 + seed})
  storage.write_json_atomic(os.path.join(run, 'gradient_flow.json'), {
      'probe_batch_size': 8,
      'snapshots': [{'step': 0, 'layers': layers}, {'step': 100, 'layers': layers}]})
  storage.write_json_atomic(os.path.join(run, 'result.json'), {
      'model': model, 'seed': seed, 'params': depth * 1000, 'time_s': time_s, 'final': {},
      'config': {}})


@pytest.fixture
def fake_sweep(tmp_path):
  workdir = str(tmp_path)
  for (model, seed), error in FINAL_ERRORS.items():
    write_fake_run(workdir, model, seed, error, time_s=10.0 * (seed + 1))
  # An unfinished run (no result.json) is not part of the results.
  os.makedirs(os.path.join(workdir, 'cifar_plain32', 'seed0'))
  with open(os.path.join(workdir, 'cifar_plain32', 'seed0', 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': 10, 'train_loss': 1.0, 'train_accuracy': 0.5}) + '\n')
  return workdir


def test_table_is_mean_and_std_over_seeds(fake_sweep):
  report = sweep.write_report(fake_sweep, title='fake')
  rows = {r['model']: r for r in report['rows']}
  assert list(rows) == ['cifar_plain20', 'cifar_plain56', 'cifar_resnet20', 'cifar_resnet56']
  # The final tenth of 100 steps holds the records of steps 90 and 100.
  def final(model, seed):
    e = FINAL_ERRORS[model, seed]
    return ((0.9 + (e - 0.9) * 0.9) + e) / 2
  for model, row in rows.items():
    values = [final(model, 0), final(model, 1)]
    mean = sum(values) / 2
    std = abs(values[0] - values[1]) / math.sqrt(2)  # Sample std of two values.
    assert row['train_error_mean'] == pytest.approx(mean)
    assert row['train_error_std'] == pytest.approx(std)
    assert row['train_loss_mean'] == pytest.approx(2 * mean)
    last = [1 - 1.5 * FINAL_ERRORS[model, s] for s in (0, 1)]
    assert row['test_accuracy_mean'] == pytest.approx(sum(last) / 2)
    assert row['seeds'] == 2 and row['time_s_mean'] == pytest.approx(15.0)
    assert row['depth'] == results.describe_model(model)[1]
    assert row['params'] == row['depth'] * 1000

  with open(os.path.join(fake_sweep, 'results.csv')) as f:
    table = list(csv.DictReader(f))
  assert [r['model'] for r in table] == list(rows)
  assert float(table[1]['train_error_mean']) == pytest.approx(
      rows['cifar_plain56']['train_error_mean'], rel=1e-5)
  assert table[1]['kind'] == 'plain' and table[3]['kind'] == 'residual'

  with open(os.path.join(fake_sweep, 'results.md')) as f:
    markdown = f.read()
  assert markdown == report['markdown']
  plain56 = rows['cifar_plain56']
  expected = (f"{100 * plain56['train_error_mean']:.2f} ± {100 * plain56['train_error_std']:.2f}")
  assert '| cifar_plain56 | plain | 56 | 56,000 | 2 |' in markdown and expected in markdown
  assert expected == '47.25 ± 6.72'
  # (0.108 + 0.02) / 2 and (0.126 + 0.04) / 2 for plain-20; 0.4725 for plain-56.
  assert ('- plain: 56 layers end at 47.25% training error, 20 layers at 7.35% (+39.90 points '
          'for the deeper net)') in markdown
  assert ('- residual: 56 layers end at 5.45% training error, 20 layers at 6.40% (-0.95 points '
          'for the deeper net)') in markdown


def test_figures_are_written_from_the_runs(fake_sweep):
  report = sweep.write_report(fake_sweep)
  for name in ('training_error.png', 'gradient_flow.png'):
    path = os.path.join(fake_sweep, name)
    assert path in report['paths']
    with open(path, 'rb') as f:
      assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 10_000  # Axes, curves and labels, not an empty canvas.
  assert not [n for n in os.listdir(fake_sweep) if n.endswith('.tmp.png')]


def test_curves_and_stage_norms_are_averaged_over_seeds(fake_sweep):
  runs = [r for r in results.collect_runs(fake_sweep) if r['model'] == 'cifar_plain56']
  steps, errors = plots.mean_curve(runs, 'train', lambda r: 1 - r['train_accuracy'])
  assert steps == list(range(10, 101, 10))
  assert errors[-1] == pytest.approx(0.45) and errors[0] == pytest.approx((0.85 + 0.86) / 2)
  steps, errors = plots.mean_curve(runs, 'evals', lambda r: 1 - r['eval_accuracy'])
  assert steps == [50, 100] and errors[-1] == pytest.approx(1.5 * 0.45)
  norms = plots.mean_stage_norms(runs)
  assert list(norms) == [0, 100]
  assert list(norms[0]) == ['stem', 'stage1', 'stage2', 'stage3', 'head']
  assert norms[0]['stage1'] == pytest.approx(0.01) and norms[0]['stage3'] == pytest.approx(1.0)
  assert norms[100]['head'] == pytest.approx(2.5)  # Seeds 0 and 1: 2.0 and 3.0.


def test_metrics_reader_keeps_the_last_record_of_a_step_and_names_bad_lines(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  with open(path, 'w') as f:
    f.write('{"step": 2, "train_loss": 1.0, "train_accuracy": 0.5}\n\n')
    f.write('{"step": 4, "train_loss": 0.8, "train_accuracy": 0.6, "eval_loss": 0.9, '
            '"eval_accuracy": 0.55}\n')
    f.write('{"step": 4, "train_loss": 0.7, "train_accuracy": 0.7}\n')
    f.write('{"note": "no step"}\n')
  train, evals = results.read_metrics(path)
  assert [(r['step'], r['train_loss']) for r in train] == [(2, 1.0), (4, 0.7)]
  assert [(r['step'], r['eval_accuracy']) for r in evals] == [(4, 0.55)]
  loss, error = results.final_training_metrics(train, final_fraction=0.5)
  assert loss == pytest.approx(0.85) and error == pytest.approx(0.4)
  assert results.final_training_metrics(train, final_fraction=0.1) == pytest.approx((0.7, 0.3))
  with open(path, 'a') as f:
    f.write('{"step": 6, "train_loss": \n')
  with pytest.raises(DatasetError, match=r'metrics\.jsonl line 6'):
    results.read_metrics(path)


def test_describe_model_reads_kind_and_depth():
  assert results.describe_model('cifar_plain56') == ('plain', 56)
  assert results.describe_model('resnet50') == ('residual', 50)
  assert results.describe_model('cifar_resnet8') == ('residual', 8)
  assert results.describe_model('plain152') == ('plain', 152)
  for name in ('vgg16', 'cifar_resnet9', 'resnet51'):
    with pytest.raises(ConfigError, match=name):
      results.describe_model(name)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
  path = str(tmp_path / 'results.md')
  storage.write_text_atomic(path, 'old table\n')

  class Unprintable:
    def __str__(self):
      raise RuntimeError('boom')

  with pytest.raises(TypeError):
    storage.write_text_atomic(path, Unprintable())
  with open(path) as f:
    assert f.read() == 'old table\n'
  assert os.listdir(tmp_path) == ['results.md']


def test_atomic_figure_save_keeps_the_old_file_when_drawing_fails(tmp_path):
  from matplotlib.figure import Figure
  path = str(tmp_path / 'curve.png')
  fig = Figure()
  fig.subplots().plot([0, 1], [1, 0])
  storage.save_figure_atomic(fig, path)
  with open(path, 'rb') as f:
    good = f.read()
  assert good[:8] == PNG_MAGIC
  with pytest.raises(ValueError):
    storage.save_figure_atomic(fig, path, dpi=-1)  # Fails inside savefig.
  with open(path, 'rb') as f:
    assert f.read() == good
  assert os.listdir(tmp_path) == ['curve.png']


@pytest.mark.slow
def test_plotting_leaves_the_callers_matplotlib_backend_alone(tmp_path):
  """The library draws on Figure objects: importing and plotting neither switches the
  backend nor imports pyplot (checked in a fresh interpreter with a non-Agg backend)."""
  import subprocess
  import sys
  script = (
      'import sys, matplotlib\n'
      'matplotlib.use("svg")\n'
      'from resnet_jax.ablation import plots, sweep\n'
      'from resnet_jax.train import plots as train_plots\n'
      'from resnet_jax.train import loop\n'
      f'sweep.write_report({str(tmp_path)!r})\n'
      'assert matplotlib.get_backend() == "svg", matplotlib.get_backend()\n'
      'assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"\n')
  for (model, seed), error in list(FINAL_ERRORS.items())[:2]:
    write_fake_run(str(tmp_path), model, seed, error)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        cwd=root, env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS='cpu'),
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
