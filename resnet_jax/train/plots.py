"""The training-curve figure written to the workdir at the end of a run (resnet_jax.plot_style:
a Figure, no pyplot; the caller's backend and pyplot's state are left alone)."""
from resnet_jax import plot_style
from resnet_jax.train.metrics import read_jsonl

PLOT_NAME = 'training_curves.png'


def plot_training_curves(metrics_path: str, out_path: str, title: str = '') -> bool:
  """Loss and accuracy against training step, train and eval, from a metrics.jsonl.

  The loss axis is logarithmic when the losses span more than a decade (an early
  evaluation at loss 30 would squash the rest); the title adds the budget (steps). Written
  atomically (temporary file, then os.replace). Returns False if there is nothing to plot.
  """
  records = read_jsonl(metrics_path)
  if not records:
    return False
  last_step = max(r['step'] for r in records)
  with plot_style.style():
    fig, axes = plot_style.new_figure(1, 2, 11, 4, f'{title}, {last_step} steps' if title
                                      else f'{last_step} steps')
    loss_ax, acc_ax = axes[0]
    losses = []
    for index, (split, label) in enumerate((('train', 'train (mean since last log)'),
                                            ('eval', 'eval (whole split)'))):
      for ax, name, scale in ((loss_ax, 'loss', 1), (acc_ax, 'accuracy', 100)):
        key = f'{split}_{name}'
        points = [(r['step'], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
          steps, values = zip(*points)
          ax.plot(steps, [scale * v for v in values], label=label,
                  **plot_style.curve_style(index))
          if name == 'loss':
            losses.extend(values)
    log_loss = plot_style.log_scale_if_spread(loss_ax, losses)
    loss_ax.set(xlabel='training step', title='loss',
                ylabel='cross-entropy loss' + (' (log scale)' if log_loss else ''))
    acc_ax.set(xlabel='training step', ylabel='accuracy (%)', title='accuracy', ylim=(0, 102))
    for ax in (loss_ax, acc_ax):
      if ax.get_legend_handles_labels()[0]:
        ax.legend()
      else:
        plot_style.mark_empty(ax, 'no values logged')
    plot_style.save(fig, out_path, dpi=100)
  return True
