"""Figures of a residual-against-plain sweep (resnet_jax.plot_style: Figures, no pyplot).

`plot_training_error` draws He et al. 2015, Figure 6: training error against
iterations, plain networks on the left and residual networks on the right (a sweep of
one kind draws one panel), one curve per model (dashed: training error; solid, bold: test
error where the runs evaluated; both the mean over seeds).
`plot_gradient_flow` draws the per-stage gradient norm at initialisation and
at later snapshots, plain (dashed, squares) against residual (solid, circles).

Every curve has a colour of its own from the categorical palette; titles add the budget
(iterations, seeds). Nothing here touches pyplot's global state or the caller's backend.
"""
from matplotlib.lines import Line2D

from resnet_jax import plot_style
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


def _curve_styles(models):
  """{model: (sort key, colour, label)}: models sorted by depth (then design and shortcut,
  in the order designs.py lists them, where the sweep holds several), each with a colour of
  its own; the label names kind and depth, and design and shortcut where they vary."""
  variants = {m: describe_variant(m) for m in models}
  several = len(set(variants.values())) > 1
  order = lambda design, shortcut: (DESIGN_NAMES.index(design), SHORTCUTS.index(shortcut))
  keys = {m: (describe_model(m)[1],) + (order(*variants[m]) if several else ())
          + (describe_model(m)[0],) for m in models}
  styles = {}
  for index, m in enumerate(sorted(models, key=lambda m: keys[m])):
    kind, depth = describe_model(m)
    design, shortcut = variants[m]
    label = f'{kind}-{depth}' + (f' {design}, {shortcut}' if several else '')
    styles[m] = (keys[m], plot_style.PALETTE[index % len(plot_style.PALETTE)], label)
  return styles


def _budget(runs, records_key='train'):
  """'N iterations, K seeds' of a sweep's runs (the most iterations any run logged)."""
  steps = [r['step'] for run in runs for r in run.get(records_key, [])]
  seeds = {run.get('seed') for run in runs}
  parts = [f'{max(steps)} iterations'] if steps else []
  return ', '.join(parts + [_count(len(seeds), 'seed')])


def _titled(title, runs):
  return f'{title}\n{_budget(runs)}' if title else _budget(runs)


def plot_training_error(runs, path, title=None):
  """Writes the Figure-6-style training-error figure of `runs` (from collect_runs) to `path`."""
  groups = _group_by_model(runs)
  styles = _curve_styles(groups)
  kinds = [k for k in _KINDS if any(describe_model(m)[0] == k for m in groups)] or ['residual']
  has_test = any(run.get('evals') for run in runs)
  train_error = lambda r: 100 * (1 - r['train_accuracy'])
  test_error = lambda r: 100 * (1 - r['eval_accuracy'])
  with plot_style.style():
    fig, axes = plot_style.new_figure(1, len(kinds), 5.5 * len(kinds), 4.4,
                                      _titled(title, runs), sharey=True)
    for ax, kind in zip(axes[0], kinds):
      for model in sorted(groups, key=lambda m: styles[m][0]):
        if describe_model(model)[0] != kind:
          continue
        _, color, label = styles[model]
        label = f'{label} ({_count(len(groups[model]), "seed")})'
        ax.plot(*mean_curve(groups[model], 'train', train_error), '--', color=color,
                linewidth=1.2, label=None if has_test else label)
        if has_test:
          ax.plot(*mean_curve(groups[model], 'evals', test_error), '-', color=color,
                  linewidth=2.2, marker='o', markersize=4, label=label)
      ax.set_title(f'{kind} networks')
      ax.set_xlabel('training iteration')
      handles, labels = ax.get_legend_handles_labels()
      if has_test:
        handles += [Line2D([], [], color='0.3', linestyle='--', linewidth=1.2),
                    Line2D([], [], color='0.3', linestyle='-', linewidth=2.2, marker='o',
                           markersize=4)]
        labels += ['training error', 'test error']
      if handles:
        ax.legend(handles, labels, loc='upper right')
    axes[0][0].set_ylabel('error (%), mean over seeds' if has_test
                          else 'training error (%), mean over seeds')
    plot_style.save(fig, path)
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

  Each model has a colour of its own; plain networks are dashed with square markers,
  residual networks solid with circles. The y axis is logarithmic, since vanishing
  gradients are a matter of factors.
  """
  groups = {m: mean_stage_norms(rs) for m, rs in _group_by_model(runs).items()}
  groups = {m: g for m, g in groups.items() if g}
  steps = sorted(set().union(*(set(g) for g in groups.values()))) if groups else []
  styles = _curve_styles(groups)
  columns = max(1, len(steps))
  with plot_style.style():
    fig, axes = plot_style.new_figure(1, columns, max(5.0, 3.8 * columns), 4.2,
                                      _titled(title, runs), sharey=True)
    for ax, step in zip(axes[0], steps):
      for model in sorted(groups, key=lambda m: styles[m][0]):
        if step not in groups[model]:
          continue
        plain = describe_model(model)[0] == 'plain'
        _, color, label = styles[model]
        stages = groups[model][step]
        ax.plot(range(len(stages)), list(stages.values()), '--' if plain else '-',
                marker='s' if plain else 'o', markersize=4, color=color, label=label)
        ax.set_xticks(range(len(stages)), list(stages), rotation=30)
      ax.set_yscale('log')
      ax.set_xlabel('stage (input side left)')
      ax.set_title('at initialisation' if step == 0 else f'after iteration {step}')
    axes[0][0].set_ylabel('gradient norm (RMS over the stage, log)')
    if steps:
      axes[0][0].legend()
    else:
      plot_style.mark_empty(axes[0][0], 'no gradient-flow snapshots')
    plot_style.save(fig, path)
  return path
