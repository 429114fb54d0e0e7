"""Residual against plain: the twins of each depth, several seeds each, then a table and figures.

  python experiments/ablation.py --config experiments/configs/ablation_digits.py \
      --workdir runs/ablation
  python experiments/ablation.py --workdir /tmp/ablation_quick --quick   # smoke run, about a minute
  python experiments/ablation.py --config experiments/configs/ablation_block_design.py
      # also ablation_shortcuts.py, ablation_depth_preact.py: block designs and shortcut
      # options of He et al. 2016 / 2015, through model names such as
      # 'cifar_resnet20:block_design=full_preact' (resnet_jax/ablation/sweep.py)

Each (model, seed) is an ordinary training run in <workdir>/<model>/seed<k>: rerunning the
same command resumes an interrupted run and skips finished ones. At the end the workdir
holds results.csv, results.md, training_error.png (He et al. 2015, Fig. 6) and
gradient_flow.png, and the table is printed. Bad input prints one `error:` line and exits
with code 2 (--debug shows the traceback); a signal saves a checkpoint and exits 0 after
saying how to continue.
"""
import os
import sys
import time

from absl import app, flags

from experiments import cli, malloc_tuning

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                              'ablation_digits.py')
SCRIPT = cli.Script(__doc__)
_CONFIG = SCRIPT.define_config(DEFAULT_CONFIG, 'Path to a sweep config file; override fields '
                               'with --config.field=value (e.g. --config.seeds="(0,)").')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory (default: runs/<config '
                               'file name>, or runs/<config file name>_quick with --quick).',
                               flag_values=SCRIPT.flags)
_QUICK = flags.DEFINE_bool('quick', False, 'Tiny depths, one seed, a few steps: a smoke run '
                           'of the whole pipeline in about a minute.', flag_values=SCRIPT.flags)


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  from experiments.configs import ablation_quick
  from resnet_jax.ablation import sweep
  cli.release_stop_signals()  # Imported: a signal that waited stops the script here.
  config = _CONFIG.value
  if _QUICK.value:
    config = ablation_quick.quick(config)
  workdir = cli.sweep_workdir(_WORKDIR.value, SCRIPT.config_path(), _QUICK.value,
                              'new or the sweep to continue')
  start = time.perf_counter()
  out = sweep.run_sweep(config, workdir)
  if out['preempted']:
    print(f'stopped by a signal; rerun the same command to continue the sweep in {workdir}')
    return cli.EXIT_OK
  counts = {s: sum(v == s for v in out['status'].values()) for s in ('done', 'skipped')}
  print()
  print(out['markdown'])
  print(f"{counts['done']} runs trained, {counts['skipped']} already finished; "
        f'{time.perf_counter() - start:.0f} s')
  for path in out['paths']:
    print(f'wrote {path}')
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run_stoppable(_main, argv)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
