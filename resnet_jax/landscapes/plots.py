"""Figures of loss-landscape probes (resnet_jax.plot_style: Figures, no pyplot).

`plot_model_landscape` draws one run: the loss contour over the 2D grid, the same surface
in 3D, the |lambda_min / lambda_max| map on the coarser curvature grid and the loss along
the line from the starting weights to the trained ones. `plot_residual_vs_plain` draws
Li et al. 2018's Figure 5 layout: one column per depth, residual nets on the top row and
plain nets on the bottom, loss contours at the same levels in every panel, read off one
colour bar. The axes are the coefficients of the two filter-normalised random directions
(0 at the trained weights, marked +).
"""
import numpy as np

from resnet_jax import plot_style
from resnet_jax.ablation.results import describe_model
from resnet_jax.landscapes.curvature import curvature_ratio

# Li et al.'s contour levels (their plot_2D_contour: 0.1 to 10 in steps of 0.5), shared by
# every panel so that surfaces compare on one scale.
CONTOUR_LEVELS = np.arange(0.1, 10.0, 0.5)


_DIRECTION_1 = 'direction 1 (filter-normalised)'
_DIRECTION_2 = 'direction 2 (filter-normalised)'
_CONTOUR_CMAP = 'viridis'


def _contour(ax, result, levels=CONTOUR_LEVELS):
  """Loss contours at `levels` (no inline labels, which overlap: the colour bar is the key)."""
  xs = np.asarray(result['xs'])
  loss = np.asarray(result['loss'])
  # loss[i, j]: first direction at xs[i], second at xs[j]; contour wants Z[y, x].
  drawn = ax.contour(xs, xs, loss.T, levels=levels, cmap=_CONTOUR_CMAP, linewidths=0.9)
  ax.plot([0], [0], 'k+', markersize=7)
  ax.set_aspect('equal')
  ax.set_xlim(xs.min(), xs.max())
  ax.set_ylim(xs.min(), xs.max())
  ax.locator_params(nbins=5)
  return drawn


def _contour_bar(fig, drawn, axes):
  bar = fig.colorbar(drawn, ax=axes, shrink=0.9)
  bar.set_label('training loss (contour levels)')
  return bar


def plot_model_landscape(result: dict, path: str, title: str = '') -> str:
  """Writes the four panels of one probe (see the module docstring) to `path`."""
  top = CONTOUR_LEVELS[-1]
  with plot_style.style():
    fig = plot_style.figure(20, 4.8, title)
    # Room between panels for the 3D axes' z label, which the layout does not see.
    fig.get_layout_engine().set(w_pad=0.3)
    xs, loss = np.asarray(result['xs']), np.asarray(result['loss'])
    ax = fig.add_subplot(1, 4, 1)
    _contour_bar(fig, _contour(ax, result), ax)
    ax.set(title='loss contours', xlabel=_DIRECTION_1, ylabel=_DIRECTION_2)

    ax = fig.add_subplot(1, 4, 2, projection='3d')
    grid_x, grid_y = np.meshgrid(xs, xs, indexing='ij')
    # Colour repeats the labelled z axis: no colour bar needed.
    ax.plot_surface(grid_x, grid_y, np.minimum(loss, top), cmap=_CONTOUR_CMAP, vmin=0,
                    vmax=top, linewidth=0, antialiased=True)
    ax.set_title(f'loss surface (clipped at {top:.1f})')
    ax.set(xlabel='direction 1', ylabel='direction 2', zlabel='loss', zlim=(0, top))
    ax.locator_params(nbins=5)

    ax = fig.add_subplot(1, 4, 3)
    cxs = np.asarray(result['curvature_xs'])
    ratio = curvature_ratio(np.asarray(result['lambda_min']), np.asarray(result['lambda_max']))
    mesh = ax.pcolormesh(cxs, cxs, ratio.T, cmap=plot_style.SEQUENTIAL_CMAP, vmin=0,
                         vmax=max(0.5, float(ratio.max())), shading='nearest')
    fig.colorbar(mesh, ax=ax, shrink=0.9).set_label('|λmin / λmax| (0: convex)')
    ax.set_aspect('equal')
    ax.set_xlim(xs.min(), xs.max())  # The loss grid's extent, not the cells' outer edges.
    ax.set_ylim(xs.min(), xs.max())
    ax.set(title='non-convexity (Lanczos)', xlabel=_DIRECTION_1, ylabel='direction 2')

    ax = fig.add_subplot(1, 4, 4)
    ax.plot(result['alphas'], result['interpolation_loss'], label='training loss',
            **plot_style.curve_style(0))
    ax.set_xlabel('t: weights (1 - t) initial + t final')
    ax.set_ylabel('training loss')
    other = ax.twinx()
    other.plot(result['alphas'], 100 * np.asarray(result['interpolation_accuracy']),
               label='training accuracy (%)', **plot_style.curve_style(1))
    other.set_ylabel('training accuracy (%)')
    other.grid(False)
    ax.set_title('from initial to final weights')
    handles = ax.get_legend_handles_labels()[0] + other.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc='upper center',
              bbox_to_anchor=(0.5, -0.16), ncol=2)
    plot_style.save(fig, path, dpi=100)
  return path


def plot_residual_vs_plain(results: dict, path: str, title: str = '') -> str:
  """Writes the Figure-5-style panel: {model name: probe result} -> residual row over plain
  row, one column per depth; a missing twin's panel says so in words."""
  by_cell = {describe_model(model): result for model, result in results.items()}
  depths = sorted({depth for _, depth in by_cell})
  columns = max(1, len(depths))
  with plot_style.style():
    fig, axes = plot_style.new_figure(2, columns, 3.6 * columns + 1.2, 7.4, title)
    drawn = None
    for column, depth in enumerate(depths):
      for row, kind in enumerate(('residual', 'plain')):
        ax = axes[row][column]
        result = by_cell.get((kind, depth))
        name = f'{"ResNet" if kind == "residual" else "plain"}-{depth}'
        if result is None:
          plot_style.mark_empty(ax, f'no {name} in this sweep')
          continue
        drawn = _contour(ax, result)
        loss = np.asarray(result['loss'])
        ax.set_title(f'{name}: loss {loss.min():.3g} .. {loss.max():.3g}')
        ax.set(xlabel='direction 1', ylabel='direction 2')
    if drawn is not None:
      _contour_bar(fig, drawn, axes.ravel().tolist())
    else:
      plot_style.mark_empty(axes[0][0], 'no probes')
    plot_style.save(fig, path, dpi=100)
  return path
