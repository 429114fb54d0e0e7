"""Loss landscapes and curvature of residual against plain nets (Li et al. 2018, Figure 5).

  python experiments/landscape.py --config experiments/configs/landscape_digits.py \
      --workdir runs/landscape
  python experiments/landscape.py --workdir /tmp/landscape_quick --quick   # smoke run

Each (model, seed) of the config is trained as a run of the ablation sweep in
<workdir>/<model>/seed<k> (a finished run, one with result.json, is reused: point
--workdir at an ablation sweep's directory to probe its runs), then probed at its final
checkpoint (resnet_jax.landscapes.probe). <workdir>/landscape/ then holds, per run,
<model>_seed<k>.npz (the grids, the curvature map, the interpolation and the two
directions) and <model>_seed<k>.png (contour, 3D surface, curvature map, interpolation),
plus residual_vs_plain.png (one column per depth, residual above plain, first seed) and
landscape.jsonl (one line of numbers per run). A probe whose .npz was written with the
same settings and step is read back instead of recomputed. Bad input prints one `error:`
line and exits with code 2 (--debug shows the traceback), before anything is written.
"""
import json
import logging
import os
import sys
import time

from absl import app, flags

from experiments import cli, malloc_tuning

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                              'landscape_digits.py')
SCRIPT = cli.Script(__doc__)
_CONFIG = SCRIPT.define_config(DEFAULT_CONFIG, 'Path to a landscape config file; override '
                               'fields with --config.field=value (e.g. '
                               '--config.landscape.grid_size=11).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory (default: runs/<config '
                               'file name>, or runs/<config file name>_quick with --quick).',
                               flag_values=SCRIPT.flags)
_QUICK = flags.DEFINE_bool('quick', False, 'Depth 8 only, a few steps, a 5x5 grid: a smoke run '
                           'of the whole pipeline.', flag_values=SCRIPT.flags)

LANDSCAPE_DIR = 'landscape'


def _check(config):
  """Every field, before anything is written."""
  from resnet_jax.ablation import sweep
  from resnet_jax.errors import ConfigError
  from resnet_jax.landscapes import probe as landscape_probe
  if 'landscape' not in config:
    raise ConfigError('config.landscape is missing; expected the fields of '
                      'experiments/configs/landscape_digits.py')
  landscape_probe.check_settings(config.landscape, 'config.landscape')
  sweep.check_sweep_config(config)


def _reusable(path, settings, step):
  """The probe saved at `path` if it was made with these settings at this step, else None."""
  from resnet_jax.landscapes import probe as landscape_probe
  if not os.path.isfile(path):
    return None
  try:
    saved = landscape_probe.load_result(path)
  except (OSError, ValueError):
    return None
  same = all(f'settings/{k}' in saved and saved[f'settings/{k}'].item() == settings[k]
             for k in landscape_probe.SETTINGS)
  return saved if same and int(saved['step']) == step else None


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  from experiments.configs import landscape_digits
  config = _CONFIG.value
  if _QUICK.value:
    config = landscape_digits.quick(config)
  workdir = cli.sweep_workdir(_WORKDIR.value, SCRIPT.config_path(), _QUICK.value,
                              'new, or a sweep whose runs to probe')
  _check(config)
  from resnet_jax import storage
  from resnet_jax.ablation import sweep
  from resnet_jax.landscapes import plots as landscape_plots, probe as landscape_probe
  from resnet_jax.train import checkpoint, loop, setup
  settings = config.landscape.to_dict()
  start = time.perf_counter()
  dataset = setup.load_data(config.base.data)
  sweep.check_runs(config, workdir, dataset)  # Every run's fit to the data, before any trains.
  for seed in config.seeds:
    for model_name in config.models:
      status = sweep.run_one(config, workdir, model_name, seed, dataset, loop.train_and_evaluate)
      if status == 'preempted':
        print(f'stopped by a signal; rerun the same command to continue in {workdir}')
        return cli.EXIT_OK
  trained = time.perf_counter() - start

  out_dir = os.path.join(workdir, LANDSCAPE_DIR)
  os.makedirs(out_dir, exist_ok=True)
  lines, first_seed, written = [], {}, []
  for seed in config.seeds:
    for model_name in config.models:
      run_directory = sweep.run_dir(workdir, model_name, seed)
      name = f'{model_name}_seed{seed}'
      npz_path = os.path.join(out_dir, f'{name}.npz')
      reader = checkpoint.Checkpointer(run_directory, 1, read_only=True)
      try:
        step = reader.latest_step()
      finally:
        reader.close()
      result = _reusable(npz_path, settings, step)
      if result is None:
        result = landscape_probe.probe_run(run_directory, dataset, settings)
        landscape_probe.save_result(npz_path, result)
      summary = landscape_probe.summarize(result)
      lines.append(dict(model=model_name, seed=int(seed), **summary))
      written.append(landscape_plots.plot_model_landscape(
          result, os.path.join(out_dir, f'{name}.png'), f'{model_name}, seed {seed}'))
      first_seed.setdefault(model_name, result)
  written.append(landscape_plots.plot_residual_vs_plain(
      first_seed, os.path.join(out_dir, 'residual_vs_plain.png'),
      f'{config.get("title", "")}: training loss around the trained weights'))
  jsonl = os.path.join(out_dir, 'landscape.jsonl')
  storage.write_text_atomic(jsonl, ''.join(json.dumps(line) + '\n' for line in lines))
  written.append(jsonl)

  print('| model | seed | loss at 0 | loss min .. max | λmax at 0 | λmin at 0 | '
        f'share |λmin/λmax| > {settings["ratio_threshold"]} (inner) | median |λmin/λmax| | '
        'probe s |')
  print('|---|---|---|---|---|---|---|---|---|')
  for line in lines:
    print(f"| {line['model']} | {line['seed']} | {line['loss_at_origin']:.3f} | "
          f"{line['loss_min']:.3f} .. {line['loss_max']:.2f} | "
          f"{line['lambda_max_at_origin']:.3g} | {line['lambda_min_at_origin']:.3g} | "
          f"{line['nonconvex_fraction']:.2f} ({line['nonconvex_fraction_inner']:.2f}) | "
          f"{line['ratio_median']:.2f} | "
          f"{line['time_s']:.0f} |")
  print(f'training (or reusing) {trained:.0f} s, total {time.perf_counter() - start:.0f} s')
  for path in written:
    print(f'wrote {path}')
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  # Orbax's notes on read-only restores are warnings: only errors from it.
  return SCRIPT.run(_main, argv, library_level=logging.ERROR)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
