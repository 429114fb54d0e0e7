"""The training-curve figure written to the workdir at the end of a run.

Drawn on a `matplotlib.figure.Figure` and written with `fig.savefig`: no pyplot, so the
caller's backend and pyplot's global state are left as they were.
"""
from matplotlib.figure import Figure

from resnet_jax import storage
from resnet_jax.train.metrics import read_jsonl

PLOT_NAME = 'training_curves.png'


def plot_training_curves(metrics_path: str, out_path: str, title: str = '') -> bool:
  """Loss and accuracy against step, train and eval, from a metrics.jsonl.

  Written atomically (temporary file, then os.replace). Returns False if there is nothing
  to plot.
  """
  records = read_jsonl(metrics_path)
  if not records:
    return False
  fig = Figure(figsize=(11, 4))
  loss_ax, acc_ax = fig.subplots(1, 2)
  for split, style in (('train', '-'), ('eval', 'o-')):
    for ax, name in ((loss_ax, 'loss'), (acc_ax, 'accuracy')):
      key = f'{split}_{name}'
      points = [(r['step'], r[key]) for r in records if isinstance(r.get(key), (int, float))]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, style, label=split, markersize=3)
  loss_ax.set(xlabel='step', ylabel='loss', title='loss')
  acc_ax.set(xlabel='step', ylabel='accuracy', title='accuracy', ylim=(0, 1.02))
  for ax in (loss_ax, acc_ax):
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  storage.save_figure_atomic(fig, out_path, dpi=100)
  return True
