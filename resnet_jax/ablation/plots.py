"""Figures of a residual-against-plain sweep (matplotlib Figures; no pyplot).

`plot_training_error` draws He et al. 2015, Figure 6: training error against
iterations, plain networks on the left and residual networks on the right, one
curve per depth (dashed: training error, bold: test error, both mean over seeds).
`plot_gradient_flow` draws the per-stage gradient norm at initialisation and
at later snapshots, plain against residual.

Figures are built on `matplotlib.figure.Figure` and written with `fig.savefig` (which
picks the writer from the file's extension), so nothing here touches pyplot's global
state or the caller's backend (a notebook importing this keeps its own).
"""
import matplotlib
from matplotlib.figure import Figure

from resnet_jax import storage
from resnet_jax.ablation.gradient_flow import stage_gradient_norms
from resnet_jax.ablation.results import describe_model, describe_variant
from resnet_jax.models.designs import DESIGN_NAMES, SHORTCUTS

_KINDS = ('plain', 'residual')


def mean_curve(runs, records_key, value_fn):
  """(steps, values): the mean over `runs` of value_fn(record) at the steps every run logged."""
  per_run = [{r['step']: value_fn(r) for r in run[records_key]} for run in runs]
  if not per_run:
    return [], []
  steps = sorted(set.intersection(*(set(p) for p in per_run)))
  return steps, [sum(p[s] for p in per_run) / len(per_run) for s in steps]


def _count(n, noun):
  return f'{n} {noun}' + ('' if n == 1 else 's')


def _group_by_model(runs):
  groups = {}
  for run in runs:
    groups.setdefault(run['model'], []).append(run)
  return groups


def _depth_colors(depths):
  """One colour per depth, shallow dark to deep light (the last tenth of viridis is too pale)."""
  cmap = matplotlib.colormaps['viridis']
  return {d: cmap(0.85 * i / max(1, len(depths) - 1)) for i, d in enumerate(sorted(depths))}


def _curve_styles(models):
  """{model: (sort key, colour, label)}: colour is depth, as in Figure 6; where the sweep
  holds several block designs or shortcuts, each (depth, design, shortcut) gets its own
  colour and the label names them."""
  variants = {m: describe_variant(m) for m in models}
  several = len(set(variants.values())) > 1
  # Designs and shortcuts in the order designs.py lists them (the papers' order).
  order = lambda design, shortcut: (DESIGN_NAMES.index(design), SHORTCUTS.index(shortcut))
  keys = {m: (describe_model(m)[1],) + (order(*variants[m]) if several else ())
          for m in models}
  colors = _depth_colors(set(keys.values()))
  styles = {}
  for m in models:
    kind, depth = describe_model(m)
    design, shortcut = variants[m]
    label = f'{kind}-{depth}' + (f' {design}, {shortcut}' if several else '')
    styles[m] = (keys[m], colors[keys[m]], label)
  return styles


def _new_figure(columns, width, height, title):
  fig = Figure(figsize=(width, height))
  axes = fig.subplots(1, columns, sharey=True, squeeze=False)[0]
  if title:
    fig.suptitle(title)
  return fig, axes


def _save(fig, path):
  """Saves through a temporary file, so a failed plot never replaces a good one."""
  storage.save_figure_atomic(fig, path, dpi=120, bbox_inches='tight')


def plot_training_error(runs, path, title=None):
  """Writes the Figure-6-style training-error figure of `runs` (from collect_runs) to `path`."""
  groups = _group_by_model(runs)
  styles = _curve_styles(groups)
  fig, axes = _new_figure(2, 11, 4.2, title)
  train_error = lambda r: 100 * (1 - r['train_accuracy'])
  test_error = lambda r: 100 * (1 - r['eval_accuracy'])
  for ax, kind in zip(axes, _KINDS):
    for model in sorted(groups, key=lambda m: styles[m][0]):
      if describe_model(model)[0] != kind:
        continue
      _, color, label = styles[model]
      ax.plot(*mean_curve(groups[model], 'train', train_error), '--', color=color,
              linewidth=1.0)
      ax.plot(*mean_curve(groups[model], 'evals', test_error), '-', color=color,
              linewidth=2.0, label=f'{label} ({_count(len(groups[model]), "seed")})')
    ax.set_title(f'{kind} networks')
    ax.set_xlabel('iterations')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(loc='upper right', fontsize=8)
  axes[0].set_ylabel('error (%)   dashed: training, bold: test')
  _save(fig, path)
  return path


def mean_stage_norms(runs):
  """{step: {stage: mean over runs of the stage's gradient norm}} at the steps every run probed."""
  per_run = [{snap['step']: stage_gradient_norms(snap['layers']) for snap in run['gradient_flow']}
             for run in runs]
  if not per_run:
    return {}
  steps = sorted(set.intersection(*(set(p) for p in per_run)))
  out = {}
  for step in steps:
    stages = list(per_run[0][step])
    out[step] = {s: sum(p[step][s] for p in per_run) / len(per_run) for s in stages}
  return out


def plot_gradient_flow(runs, path, title=None):
  """Writes per-stage gradient norms (one panel per snapshot step) of `runs` to `path`.

  Plain networks are dashed, residual networks solid; colour is depth. The
  y axis is logarithmic, since vanishing gradients are a matter of factors.
  """
  groups = {m: mean_stage_norms(rs) for m, rs in _group_by_model(runs).items()}
  groups = {m: g for m, g in groups.items() if g}
  steps = sorted(set().union(*(set(g) for g in groups.values()))) if groups else []
  styles = _curve_styles(groups)
  columns = max(1, len(steps))
  fig, axes = _new_figure(columns, 3.6 * columns, 4, title)
  for ax, step in zip(axes, steps):
    for model in sorted(groups, key=lambda m: (describe_model(m), styles[m][0])):
      if step not in groups[model]:
        continue
      kind = describe_model(model)[0]
      _, color, label = styles[model]
      stages = groups[model][step]
      ax.plot(range(len(stages)), list(stages.values()), '--' if kind == 'plain' else '-',
              marker='o', color=color, label=label)
      ax.set_xticks(range(len(stages)), list(stages), rotation=30)
    ax.set_yscale('log')
    ax.set_title('initialisation' if step == 0 else f'iteration {step}')
    ax.grid(alpha=0.3, which='both')
  axes[0].set_ylabel('gradient norm per layer (RMS over stage)')
  if steps:
    axes[0].legend(fontsize=8)
  else:
    axes[0].text(0.5, 0.5, 'no gradient-flow snapshots', ha='center',
                 transform=axes[0].transAxes)
  _save(fig, path)
  return path
