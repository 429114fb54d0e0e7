"""One look for every figure the library draws: a palette for categories, line styles and
markers that tell curves apart in grey too, labelled axes, and an atomic save.

Figures are `matplotlib.figure.Figure`s written with `fig.savefig`: no pyplot, so the
caller's backend and pyplot's global state are left as they were. Colours are Okabe and
Ito's palette for categories (distinct for the common colour-vision deficiencies); each
curve of a figure gets a (colour, line style, marker) triple of its own, so no two legend
entries look alike. Colour scales (contours, heat maps) always come with a colour bar.
"""
import contextlib
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from resnet_jax import storage

# Okabe & Ito (2008), "Color Universal Design": black last (it is the marker of origins).
PALETTE = ('#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#F0E442',
           '#000000')
LINE_STYLES = ('-', '--', ':', '-.')
MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*')
SEQUENTIAL_CMAP = 'viridis'  # For values on a scale (loss surfaces, curvature).

# Applied while a figure is drawn (rc settings are read when artists are created).
RC = {'font.size': 9, 'axes.titlesize': 10, 'axes.labelsize': 9, 'legend.fontsize': 8,
      'xtick.labelsize': 8, 'ytick.labelsize': 8, 'axes.grid': True, 'grid.alpha': 0.3,
      'legend.frameon': False, 'image.cmap': SEQUENTIAL_CMAP}


@contextlib.contextmanager
def style():
  """The library's rc settings while a figure is built and saved."""
  with matplotlib.rc_context(RC):
    yield


def curve_style(index: int) -> dict:
  """Keyword arguments of `ax.plot` for the index-th curve of a figure: colour, line style and
  marker all change with the index, so every curve differs from every other in colour and
  (up to 32 curves) in line style or marker too."""
  return {'color': PALETTE[index % len(PALETTE)],
          'linestyle': LINE_STYLES[(index // len(PALETTE) + index) % len(LINE_STYLES)],
          'marker': MARKERS[index % len(MARKERS)], 'markersize': 4}


def figure(width: float, height: float, title: str = '') -> Figure:
  """An empty Figure (constrained layout) with the title as its suptitle."""
  fig = Figure(figsize=(width, height), layout='constrained')
  if title:
    fig.suptitle(title)
  return fig


def new_figure(rows: int, columns: int, width: float, height: float, title: str = '',
               **subplot_kw) -> tuple[Figure, np.ndarray]:
  """A Figure with rows x columns axes (a 2-D array), the title as its suptitle."""
  fig = figure(width, height, title)
  return fig, fig.subplots(rows, columns, squeeze=False, **subplot_kw)


def mark_empty(ax, text: str) -> None:
  """An axes with nothing to draw says so in words, without ticks or frame."""
  ax.text(0.5, 0.5, text, ha='center', va='center', transform=ax.transAxes)
  ax.set_axis_off()


def log_scale_if_spread(ax, values: Sequence[float], decades: float = 1.0) -> bool:
  """A logarithmic y axis when the positive `values` span more than `decades` powers of ten
  (a first evaluation at loss 30 would otherwise squash the rest); True if set."""
  positive = np.asarray([v for v in values if np.isfinite(v) and v > 0])
  if positive.size < 2 or np.log10(positive.max() / positive.min()) <= decades:
    return False
  ax.set_yscale('log')
  return True


def save(fig: Figure, path: str, dpi: int = 120) -> str:
  """Writes `fig` through a temporary file, so that a failed plot never replaces a good one."""
  # 'tight' grows the canvas to every label and title rather than cutting one off.
  storage.save_figure_atomic(fig, path, dpi=dpi, bbox_inches='tight', pad_inches=0.1)
  return path
