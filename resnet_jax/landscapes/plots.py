"""Figures of loss-landscape probes (matplotlib Figures; no pyplot, as ablation/plots.py).

`plot_model_landscape` draws one run: the loss contour over the 2D grid, the same surface
in 3D, the |lambda_min / lambda_max| map on the coarser curvature grid and the loss along
the line from the starting weights to the trained ones. `plot_residual_vs_plain` draws
Li et al. 2018's Figure 5 layout: one column per depth, residual nets on the top row and
plain nets on the bottom, loss contours at the same levels in every panel.
"""
import numpy as np
from matplotlib.figure import Figure

from resnet_jax import storage
from resnet_jax.ablation.results import describe_model
from resnet_jax.landscapes.curvature import curvature_ratio

# Li et al.'s contour levels (their plot_2D_contour: 0.1 to 10 in steps of 0.5), shared by
# every panel so that surfaces compare on one scale.
CONTOUR_LEVELS = np.arange(0.1, 10.0, 0.5)


def _save(fig, path):
  """Through a temporary file (a failed plot never replaces a good one); 100 dpi keeps the
  multi-panel PNGs small enough for a README."""
  storage.save_figure_atomic(fig, path, dpi=100, bbox_inches='tight')


def _contour(ax, result, levels=CONTOUR_LEVELS):
  xs = np.asarray(result['xs'])
  loss = np.asarray(result['loss'])
  # loss[i, j]: first direction at xs[i], second at xs[j]; contour wants Z[y, x].
  drawn = ax.contour(xs, xs, loss.T, levels=levels, cmap='summer', linewidths=0.9)
  ax.clabel(drawn, fontsize=6, inline=True, fmt='%.1f')
  ax.plot([0], [0], 'k+', markersize=6)
  ax.set_aspect('equal')
  return drawn


def plot_model_landscape(result: dict, path: str, title: str = '') -> str:
  """Writes the four panels of one probe (see the module docstring) to `path`."""
  fig = Figure(figsize=(18, 4.2))
  fig.subplots_adjust(wspace=0.35)
  if title:
    fig.suptitle(title)
  xs, loss = np.asarray(result['xs']), np.asarray(result['loss'])
  ax = fig.add_subplot(1, 4, 1)
  _contour(ax, result)
  ax.set_title('loss contours')
  ax.set_xlabel('direction 1')
  ax.set_ylabel('direction 2')

  ax = fig.add_subplot(1, 4, 2, projection='3d')
  grid_x, grid_y = np.meshgrid(xs, xs, indexing='ij')
  ax.plot_surface(grid_x, grid_y, np.minimum(loss, CONTOUR_LEVELS[-1]), cmap='viridis',
                  linewidth=0, antialiased=True)
  ax.set_title(f'loss surface (clipped at {CONTOUR_LEVELS[-1]:.1f})')
  ax.set_zlim(0, CONTOUR_LEVELS[-1])

  ax = fig.add_subplot(1, 4, 3)
  cxs = np.asarray(result['curvature_xs'])
  ratio = curvature_ratio(np.asarray(result['lambda_min']), np.asarray(result['lambda_max']))
  mesh = ax.pcolormesh(cxs, cxs, ratio.T, cmap='viridis', vmin=0, vmax=max(0.5, ratio.max()),
                       shading='nearest')
  fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04)
  ax.set_aspect('equal')
  ax.set_title('|λmin / λmax| (Lanczos)')
  ax.set_xlabel('direction 1')

  ax = fig.add_subplot(1, 4, 4)
  ax.plot(result['alphas'], result['interpolation_loss'], '-', label='loss')
  ax.set_xlabel('t: (1 - t) initial + t final')
  ax.set_ylabel('training loss')
  other = ax.twinx()
  other.plot(result['alphas'], 100 * np.asarray(result['interpolation_accuracy']), '--',
             color='tab:orange', label='accuracy')
  other.set_ylabel('accuracy (%), dashed')
  ax.set_title('initial -> final')
  ax.grid(alpha=0.3)
  _save(fig, path)
  return path


def plot_residual_vs_plain(results: dict, path: str, title: str = '') -> str:
  """Writes the Figure-5-style panel: {model name: probe result} -> residual row over plain
  row, one column per depth; a missing twin leaves its panel empty."""
  by_cell = {describe_model(model): result for model, result in results.items()}
  depths = sorted({depth for _, depth in by_cell})
  fig = Figure(figsize=(3.4 * max(1, len(depths)), 7))
  if title:
    fig.suptitle(title)
  axes = fig.subplots(2, max(1, len(depths)), squeeze=False)
  for column, depth in enumerate(depths):
    for row, kind in enumerate(('residual', 'plain')):
      ax = axes[row][column]
      result = by_cell.get((kind, depth))
      name = f'{"ResNet" if kind == "residual" else "plain"}-{depth}'
      if result is None:
        ax.text(0.5, 0.5, f'no {name}', ha='center', transform=ax.transAxes)
        ax.set_axis_off()
        continue
      _contour(ax, result)
      loss = np.asarray(result['loss'])
      ax.set_title(f'{name}: loss {loss.min():.3g} .. {loss.max():.3g}', fontsize=9)
      ax.tick_params(labelsize=7)
  _save(fig, path)
  return path
