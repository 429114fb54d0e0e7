"""Residual against plain: the twins of each depth, several seeds each, then a table and figures.

  python experiments/ablation.py --config experiments/configs/ablation_digits.py \
      --workdir runs/ablation
  python experiments/ablation.py --workdir /tmp/ablation_quick --quick   # smoke run, < 1 min

Each (model, seed) is an ordinary training run in <workdir>/<model>/seed<k>: rerunning the
same command resumes an interrupted run and skips finished ones. At the end the workdir
holds results.csv, results.md, training_error.png (He et al. 2015, Fig. 6) and
gradient_flow.png, and the table is printed. Library errors print one message and exit
with code 2 (--debug shows the traceback); a signal saves a checkpoint and exits 0 after
saying how to continue.
"""
import logging
import os
import sys
import time
import traceback

# Runnable as `python experiments/ablation.py` from a checkout without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs',
                              'ablation_digits.py')
_CONFIG = config_flags.DEFINE_config_file('config', DEFAULT_CONFIG,
                                          'Path to a sweep config file; override fields with '
                                          '--config.field=value (e.g. --config.seeds="(0,)").')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory (default: runs/<config '
                               'file name>, or runs/<config file name>_quick with --quick).')
_QUICK = flags.DEFINE_bool('quick', False, 'Tiny depths, one seed, a few steps: a smoke run '
                           'of the whole pipeline in under a minute.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks of configuration and data errors.')


def setup_logging() -> None:
  """Our INFO lines on stderr; the checkpoint library's chatter only from WARNING up."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
  ours = logging.getLogger('resnet_jax')
  ours.setLevel(logging.INFO)
  ours.addHandler(handler)
  ours.propagate = False


def default_workdir(config_path: str, quick: bool) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', name + ('_quick' if quick else ''))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  setup_logging()
  from experiments.configs import ablation_quick
  from resnet_jax.analysis import sweep
  from resnet_jax.errors import ResNetJaxError
  config = _CONFIG.value
  if _QUICK.value:
    config = ablation_quick.quick(config)
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename, _QUICK.value)
  start = time.perf_counter()
  try:
    out = sweep.run_sweep(config, workdir)
  except ResNetJaxError as error:
    if _DEBUG.value:
      traceback.print_exc()
    print(f'error: {type(error).__name__}: {error}', file=sys.stderr)
    return 2
  if out['preempted']:
    print(f'stopped by a signal; rerun the same command to continue the sweep in {workdir}')
    return 0
  counts = {s: sum(v == s for v in out['status'].values()) for s in ('done', 'skipped')}
  print()
  print(out['markdown'])
  print(f"{counts['done']} runs trained, {counts['skipped']} already finished; "
        f'{time.perf_counter() - start:.0f} s')
  for path in out['paths']:
    print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  app.run(main)
