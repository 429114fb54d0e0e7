"""Every figure a reader can read without the README: axes labelled, one artist per legend
entry and no two entries alike, no empty panels, a colour bar for every colour scale, log
scales where values span decades."""
import json

import numpy as np
import pytest

from resnet_jax import plot_style
from resnet_jax.ablation import plots as ablation_plots
from resnet_jax.landscapes import plots as landscape_plots
from resnet_jax.train import plots as train_plots


@pytest.fixture
def drawn(monkeypatch):
  """The Figures the plotting functions save, in order (they are still written)."""
  figures = []
  save = plot_style.save

  def keep(fig, path, **kwargs):
    figures.append(fig)
    return save(fig, path, **kwargs)
  monkeypatch.setattr(plot_style, 'save', keep)
  return figures


def _plot_axes(fig):
  """The data axes of a figure (not its colour bars)."""
  return [ax for ax in fig.axes if ax.get_label() != '<colorbar>']


def _colorbars(fig):
  return [ax for ax in fig.axes if ax.get_label() == '<colorbar>']


def _check_readable(fig):
  seen = []
  for ax in _plot_axes(fig):
    if not ax.axison and ax.name != '3d':  # A panel that says in words why it is empty.
      assert ax.texts and ax.texts[0].get_text(), 'an empty panel says nothing'
      continue
    assert ax.lines or ax.collections, f'empty axes {ax.get_title()!r}'
    twin = any(ax.get_shared_x_axes().joined(ax, other) for other in seen)
    seen.append(ax)
    assert ax.get_ylabel() or ax.get_shared_y_axes().get_siblings(ax) != [ax], \
        f'no y label on {ax.get_title()!r}'
    if twin:  # The second y axis of a panel: its own label is what it adds.
      assert ax.get_ylabel()
      continue
    assert ax.get_xlabel() and ax.get_title(), f'unlabelled axes {ax.get_title()!r}'
    legend = ax.get_legend()
    if legend is not None:
      handles = legend.legend_handles
      assert len(handles) == len(legend.get_texts())
      looks = [(h.get_color(), h.get_linestyle(), h.get_marker(), h.get_linewidth())
               for h in handles]
      assert len(set(looks)) == len(looks), f'legend entries look alike: {looks}'


def _run(model, seed, evals=True):
  train = [{'step': s, 'train_accuracy': 1 - 0.9 / s} for s in range(1, 11)]
  layers = {'stem_conv': 0.1, 'stage1_block1_conv1': 0.01 * (seed + 1), 'head': 1.0}
  return {'model': model, 'seed': seed, 'train': train,
          'evals': [{'step': 10, 'eval_accuracy': 0.8}] if evals else [],
          'gradient_flow': [{'step': 0, 'layers': layers}, {'step': 10, 'layers': layers}]}


@pytest.mark.parametrize('evals', [True, False])
def test_training_error_and_gradient_flow(tmp_path, drawn, evals):
  runs = [_run(m, s, evals) for m in ('cifar_plain8', 'cifar_resnet8', 'cifar_plain20',
                                       'cifar_resnet20') for s in (0, 1)]
  ablation_plots.plot_training_error(runs, str(tmp_path / 'error.png'), 'digits sweep')
  ablation_plots.plot_gradient_flow(runs, str(tmp_path / 'flow.png'), 'digits sweep')
  error, flow = drawn
  for fig in drawn:
    _check_readable(fig)
    assert '10 iterations, 2 seeds' in fig.get_suptitle()
  legend = _plot_axes(error)[0].get_legend()
  texts = [t.get_text() for t in legend.get_texts()]
  assert ('test error' in texts) == evals  # No key for curves that are not drawn.
  ylabel = _plot_axes(error)[0].get_ylabel()
  assert ylabel.startswith('error (%)' if evals else 'training error (%)')
  flow_texts = [t.get_text() for t in _plot_axes(flow)[0].get_legend().get_texts()]
  assert {'plain-8', 'residual-8', 'plain-20', 'residual-20'} == set(flow_texts)
  assert _plot_axes(flow)[0].get_yscale() == 'log'


def test_a_sweep_of_one_kind_draws_no_empty_panel(tmp_path, drawn):
  runs = [_run(m, 0) for m in ('cifar_resnet8', 'cifar_resnet20')]
  ablation_plots.plot_training_error(runs, str(tmp_path / 'error.png'))
  [fig] = drawn
  assert [ax.get_title() for ax in _plot_axes(fig)] == ['residual networks']
  _check_readable(fig)


def _probe(scale=1.0):
  xs = np.linspace(-1, 1, 7)
  grid = xs[:, None] ** 2 + xs[None, :] ** 2
  cxs = np.linspace(-1, 1, 3)
  return {'xs': xs.tolist(), 'loss': (scale * (0.2 + 3 * grid)).tolist(),
          'curvature_xs': cxs.tolist(), 'lambda_min': np.full((3, 3), -0.1).tolist(),
          'lambda_max': np.ones((3, 3)).tolist(), 'alphas': np.linspace(0, 1, 5).tolist(),
          'interpolation_loss': [2.3, 1.5, 0.9, 0.5, 0.2],
          'interpolation_accuracy': [0.1, 0.4, 0.6, 0.8, 0.9]}


def test_landscape_figures(tmp_path, drawn):
  landscape_plots.plot_model_landscape(_probe(), str(tmp_path / 'one.png'), 'resnet8 on digits')
  landscape_plots.plot_residual_vs_plain(
      {'cifar_resnet8': _probe(), 'cifar_plain8': _probe(2.0), 'cifar_resnet20': _probe()},
      str(tmp_path / 'fig5.png'), 'digits')
  one, fig5 = drawn
  for fig in drawn:
    _check_readable(fig)
  contour, surface, curvature, line = _plot_axes(one)[:4]
  assert contour.get_ylabel() and curvature.get_ylabel() and line.get_ylabel()
  assert surface.get_zlabel() and surface.get_ylabel()
  assert curvature.get_xlim() == (-1.0, 1.0)  # The grid's extent, not the cells' edges.
  assert len(_colorbars(one)) == 2 and len(_colorbars(fig5)) == 1
  assert all(bar.get_ylabel() for bar in _colorbars(one) + _colorbars(fig5))
  empty = [ax for ax in _plot_axes(fig5) if not ax.axison]
  assert [ax.texts[0].get_text() for ax in empty] == ['no plain-20 in this sweep']


def test_training_curves_use_a_log_loss_axis_when_losses_span_decades(tmp_path, drawn):
  records = [{'step': 10, 'train_loss': 2.0, 'train_accuracy': 0.2},
             {'step': 20, 'eval_loss': 30.0, 'eval_accuracy': 0.1},
             {'step': 40, 'train_loss': 0.05, 'train_accuracy': 0.99, 'eval_loss': 0.1,
              'eval_accuracy': 0.97}]
  path = tmp_path / 'metrics.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  assert train_plots.plot_training_curves(str(path), str(tmp_path / 'c.png'), 'tiny on digits')
  [fig] = drawn
  _check_readable(fig)
  loss_ax, acc_ax = _plot_axes(fig)
  assert loss_ax.get_yscale() == 'log' and 'log' in loss_ax.get_ylabel()
  assert acc_ax.get_ylabel() == 'accuracy (%)'
  assert fig.get_suptitle() == 'tiny on digits, 40 steps'


def test_throughput_plot(tmp_path, drawn):
  from resnet_jax.perf import throughput
  setting = {'model': 'resnet50', 'layout': 'keras', 'image_size': 64, 'dtype': 'float32',
             'optimizer': 'adam', 'device': {'count': 1, 'kind': 'cpu'}, 'backend': 'cpu',
             'jax_version': '0.10.2'}
  records = [dict(setting, path=path, batch_size=batch, img_per_sec=rate * batch)
             for path, rate in (('resnet_jax', 3.0), ('flax_baseline', 2.0))
             for batch in (8, 16, 32)]
  throughput.plot_throughput(records, str(tmp_path / 'sweep.png'))
  [fig] = drawn
  _check_readable(fig)
  assert _plot_axes(fig)[0].get_ylabel() == 'training images / second'
