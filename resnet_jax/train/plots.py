"""The training-curve figure written to the workdir at the end of a run."""
import os
import tempfile

import matplotlib

matplotlib.use('Agg')  # No display on clusters; set before pyplot is imported.
import matplotlib.pyplot as plt  # noqa: E402

from resnet_jax.train.metrics import read_jsonl  # noqa: E402

PLOT_NAME = 'training_curves.png'


def plot_training_curves(metrics_path: str, out_path: str, title: str = '') -> bool:
  """Loss and accuracy against step, train and eval, from a metrics.jsonl.

  Written atomically (temporary file, then os.replace). Returns False if there is nothing
  to plot.
  """
  records = read_jsonl(metrics_path)
  if not records:
    return False
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
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
  directory = os.path.dirname(os.path.abspath(out_path))
  handle, tmp = tempfile.mkstemp(dir=directory, prefix='.plot-', suffix='.png')
  os.close(handle)
  try:
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, out_path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.remove(tmp)
  return True
