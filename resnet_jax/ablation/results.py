"""Results of a residual-against-plain sweep: runs on disk -> rows -> tables.

A sweep's work directory holds one ordinary training run per (model, seed):

  <workdir>/<model>/seed<k>/metrics.jsonl        written by the training loop
  <workdir>/<model>/seed<k>/result.json          written last, when the run is done
  <workdir>/<model>/seed<k>/gradient_flow.json   per-layer gradient norms (optional)

`collect_runs` reads the finished runs, `summarize` averages them over seeds
(one row per model) and `write_results` writes results.csv and results.md.

A sweep's "model" is a model name, optionally with the block design and shortcut option
it is trained with (resnet_jax/models/designs.py): 'cifar_resnet110',
'cifar_resnet110:block_design=bn_after_add' or
'resnet34:shortcut=projection_all,block_design=original'. Each such name is a run
directory of its own; rows and figures say which design and shortcut a run had.
"""
import csv
import io
import json
import math
import os

from resnet_jax import models
from resnet_jax.errors import ConfigError, DatasetError
from resnet_jax.storage import write_text_atomic

RESULT_FILE = 'result.json'
METRICS_FILE = 'metrics.jsonl'
GRADIENT_FLOW_FILE = 'gradient_flow.json'
# Fields of config.model a sweep's model name may set after ':' (see the module docstring).
VARIANT_FIELDS = ('block_design', 'shortcut')
_VARIANT_CHOICES = {'block_design': models.DESIGN_NAMES, 'shortcut': models.SHORTCUTS}


def parse_run_name(name):
  """(model name, {field: value}) of a sweep's model, e.g. 'cifar_resnet20:shortcut=zero_pad'.

  Raises:
    ConfigError: the part before ':' is not a model name, or a setting after it is not
      `field=value` with a field of VARIANT_FIELDS and one of its values.
  """
  model, _, settings = str(name).partition(':')
  models.parse_model_name(model)
  overrides = {}
  for setting in settings.split(',') if settings else ():
    field, equals, value = setting.partition('=')
    if not equals or field not in VARIANT_FIELDS or value not in _VARIANT_CHOICES[field]:
      choices = ', '.join(f'{f} one of {c}' for f, c in _VARIANT_CHOICES.items())
      raise ConfigError(f'sweep model {name!r}: {setting!r} is not a setting; expected '
                        f'field=value with a field of {VARIANT_FIELDS} ({choices})')
    if field in overrides:
      raise ConfigError(f'sweep model {name!r} sets {field} twice; expected it once')
    overrides[field] = value
  return model, overrides


def describe_model(name):
  """('plain' | 'residual', depth) of a sweep's model such as 'cifar_plain56' or
  'resnet50', with or without a design (see parse_run_name).

  Raises:
    ConfigError: `name` is not a model name (resnet_jax.models.registry).
  """
  parsed = models.parse_model_name(parse_run_name(name)[0])
  return parsed.kind, parsed.depth


def describe_variant(name):
  """(block design, shortcut option) a sweep's model is trained with: its own settings,
  else the model's defaults."""
  model, overrides = parse_run_name(name)
  built = models.create_model(model)
  return (overrides.get('block_design', built.design),
          overrides.get('shortcut', built.shortcut))


def read_metrics(path):
  """Training and evaluation histories of one run's metrics.jsonl.

  A resumed run may log a step twice (it restarts from its last checkpoint);
  the later record wins.

  Returns:
    (train, evals): lists of records sorted by step; train records carry
    'train_loss' and 'train_accuracy', eval records 'eval_loss' and 'eval_accuracy'.
  """
  train, evals = {}, {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DatasetError(f'{path} line {number}: expected a JSON object, found '
                           f'{line[:80]!r} ({e})') from e
      if 'step' not in record:
        continue
      if 'train_accuracy' in record:
        train[int(record['step'])] = record
      if 'eval_accuracy' in record:
        evals[int(record['step'])] = record
  return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def final_training_metrics(train_records, final_fraction=0.1):
  """(loss, error) averaged over the records of the last `final_fraction` of training.

  One logged batch is noisy; the last tenth of the run is what 'ends with'
  means in a comparison of final training error.
  """
  if not train_records:
    return math.nan, math.nan
  last = train_records[-1]['step']
  first = last - final_fraction * last
  window = [r for r in train_records if r['step'] >= first] or train_records[-1:]
  loss = sum(float(r['train_loss']) for r in window) / len(window)
  error = sum(1.0 - float(r['train_accuracy']) for r in window) / len(window)
  return loss, error


def collect_runs(workdir, final_fraction=0.1):
  """All finished runs under `workdir` (those with a result.json), sorted by model and seed.

  Each run is a dict: model, kind, depth, seed, params, time_s, train_loss,
  train_error, test_accuracy, train (records), evals (records), gradient_flow
  (the snapshots of gradient_flow.json, or []).
  """
  runs = []
  if not os.path.isdir(workdir):
    return runs
  for model in sorted(os.listdir(workdir)):
    model_dir = os.path.join(workdir, model)
    if not os.path.isdir(model_dir):
      continue
    for seed_dir in sorted(os.listdir(model_dir)):
      run_dir = os.path.join(model_dir, seed_dir)
      result_path = os.path.join(run_dir, RESULT_FILE)
      if not os.path.isfile(result_path):
        continue
      runs.append(_read_run(run_dir, final_fraction))
  runs.sort(key=lambda r: (r['kind'], r['depth'], r['model'], r['seed']))
  return runs


def _read_run(run_dir, final_fraction):
  with open(os.path.join(run_dir, RESULT_FILE)) as f:
    result = json.load(f)
  metrics_path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.isfile(metrics_path):
    raise DatasetError(f'{metrics_path}: missing, but {RESULT_FILE} says the run finished')
  train, evals = read_metrics(metrics_path)
  loss, error = final_training_metrics(train, final_fraction)
  kind, depth = describe_model(result['model'])
  design, shortcut = describe_variant(result['model'])
  flow_path = os.path.join(run_dir, GRADIENT_FLOW_FILE)
  flow = []
  if os.path.isfile(flow_path):
    with open(flow_path) as f:
      flow = json.load(f)['snapshots']
  return {
      'model': result['model'], 'kind': kind, 'depth': depth, 'design': design,
      'shortcut': shortcut, 'seed': int(result['seed']),
      'params': int(result.get('params', 0)), 'time_s': float(result.get('time_s', math.nan)),
      'train_loss': loss, 'train_error': error,
      'test_accuracy': float(evals[-1]['eval_accuracy']) if evals else math.nan,
      'train': train, 'evals': evals, 'gradient_flow': flow,
  }


def _mean_std(values):
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return math.nan, math.nan
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  # Sample standard deviation: the seeds are a sample of all possible seeds.
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(runs):
  """One row per model: mean and standard deviation over its seeds.

  Row keys: model, kind, depth, params, seeds, design, shortcut, train_loss_mean/_std,
  train_error_mean/_std, test_accuracy_mean/_std, time_s_mean. Ordered plain
  before residual, then by depth, then design and shortcut in the order designs.py lists them.
  """
  by_model = {}
  for run in runs:
    by_model.setdefault(run['model'], []).append(run)
  rows = []
  for model, group in by_model.items():
    row = {'model': model, 'kind': group[0]['kind'], 'depth': group[0]['depth'],
           'params': group[0]['params'], 'seeds': len(group), 'design': group[0]['design'],
           'shortcut': group[0]['shortcut']}
    for key in ('train_loss', 'train_error', 'test_accuracy'):
      row[key + '_mean'], row[key + '_std'] = _mean_std([r[key] for r in group])
    row['time_s_mean'] = _mean_std([r['time_s'] for r in group])[0]
    rows.append(row)
  rows.sort(key=lambda r: (r['kind'] != 'plain', r['depth'],
                           models.DESIGN_NAMES.index(r['design']),
                           models.SHORTCUTS.index(r['shortcut']), r['model']))
  return rows


CSV_COLUMNS = ('model', 'kind', 'depth', 'params', 'seeds', 'train_loss_mean', 'train_loss_std',
               'train_error_mean', 'train_error_std', 'test_accuracy_mean', 'test_accuracy_std',
               'time_s_mean', 'design', 'shortcut')


def to_csv(rows):
  """CSV text of summary rows; errors and accuracies are fractions in [0, 1]."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: f'{row[k]:.6g}' if isinstance(row[k], float) else row[k]
                     for k in CSV_COLUMNS})
  return out.getvalue()


def to_markdown(rows):
  """A Markdown table of summary rows, errors and accuracies in percent, mean ± std over seeds."""
  lines = ['| model | kind | depth | params | seeds | final train loss | final train error (%) '
           '| test accuracy (%) | time per run (s) | block design | shortcut |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|']
  for r in rows:
    lines.append(
        f"| {r['model']} | {r['kind']} | {r['depth']} | {r['params']:,} | {r['seeds']} "
        f"| {r['train_loss_mean']:.3f} ± {r['train_loss_std']:.3f} "
        f"| {100 * r['train_error_mean']:.2f} ± {100 * r['train_error_std']:.2f} "
        f"| {100 * r['test_accuracy_mean']:.2f} ± {100 * r['test_accuracy_std']:.2f} "
        f"| {r['time_s_mean']:.0f} | {r['design']} | {r['shortcut']} |")
  return '\n'.join(lines) + '\n'


def depth_comparison(rows):
  """One sentence per kind: the deepest net's final training error against the shallowest's.

  This is the comparison of He et al. 2015, section 4.2: degradation is a deeper
  plain net ending with the higher training error; residual nets should not. Where the
  sweep holds several block designs or shortcuts, each (kind, design, shortcut) is a
  group of its own, named with its design and shortcut.
  """
  variants = {(r['design'], r['shortcut']) for r in rows}
  lines = []
  for kind in ('plain', 'residual'):
    for design, shortcut in sorted(variants):
      mine = sorted((r for r in rows if r['kind'] == kind and r['design'] == design
                     and r['shortcut'] == shortcut), key=lambda r: r['depth'])
      if len(mine) < 2:
        continue
      low, high = mine[0], mine[-1]
      delta = 100 * (high['train_error_mean'] - low['train_error_mean'])
      name = kind if len(variants) == 1 else f'{kind} ({design}, shortcut {shortcut})'
      lines.append(
          f"{name}: {high['depth']} layers end at {100 * high['train_error_mean']:.2f}% "
          f"training error, {low['depth']} layers at {100 * low['train_error_mean']:.2f}% "
          f"({delta:+.2f} points for the deeper net)")
  return lines


def report_markdown(rows):
  """results.md: the table, then the depth comparison of each kind."""
  comparison = depth_comparison(rows)
  return to_markdown(rows) + ('\n' + '\n'.join(f'- {line}' for line in comparison) + '\n'
                              if comparison else '')


def write_results(rows, workdir):
  """Writes <workdir>/results.csv and results.md (atomically); returns their paths."""
  csv_path = os.path.join(workdir, 'results.csv')
  md_path = os.path.join(workdir, 'results.md')
  write_text_atomic(csv_path, to_csv(rows))
  write_text_atomic(md_path, report_markdown(rows))
  return csv_path, md_path
