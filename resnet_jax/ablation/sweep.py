"""Sweeps of residual designs: one ordinary training run per (model, seed).

A sweep config (see experiments/configs/ablation_digits.py) holds:
  base:   a training config (resnet_jax.train.config.base_config) shared by every run;
  models: model names (resnet_jax.models.registry), e.g. ('cifar_plain20', 'cifar_plain56',
          'cifar_resnet20', ...); 'cifar_plain<6n+2>' / 'cifar_resnet<6n+2>' give CIFAR nets
          of any depth (tiny ones in experiments/configs/ablation_quick.py); a name may
          set the block design and shortcut option of its runs after a ':', e.g.
          'cifar_resnet110:block_design=bn_after_add' or 'resnet34:shortcut=zero_pad'
          (ablation/results.py, parse_run_name), so that one sweep compares residual
          against plain, block designs (He et al. 2016, Fig. 4) or shortcut options;
  seeds:  the seeds each model is trained with;
  probe_batch_size: training images in the fixed batch of the gradient-flow probe;
  title:  a line for the figures.

Every run trains in <workdir>/<model>/seed<k> with `train_and_evaluate`, so an
interrupted run resumes from its checkpoint. Its network is the one training builds from
the run's config (setup.build_model): every field of config.base.model applies, and a
field that does not suit one of the models (zero_init_last_bn on a plain twin, an image size
too small for it) or the data (its classes, its image size) stops the sweep before its first
run, as does a finished run recorded with another config. When training is done the run's
gradient flow is probed -- at initialisation (the variables the run started from, rebuilt
from its seed and finetune.init_from) and at every checkpoint the run kept -- on one fixed
batch, then result.json is written last, atomically: a run with a result.json is finished
and is skipped on a rerun. Nothing in the training loop is changed for it.
"""
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import models, storage, weights
from resnet_jax.ablation import plots, results
from resnet_jax.ablation.gradient_flow import layer_gradient_norms
from resnet_jax.data.channel_stats import channel_stats
from resnet_jax.errors import ConfigError
from resnet_jax.train import (
  checkpoint,
  config as config_lib,
  config_changes,
  loop,
  setup,
  state as state_lib,
  workdir_claim,
)
from resnet_jax.train.preprocess import preprocess as preprocess_images

log = logging.getLogger(__name__)


def run_dir(workdir, model_name, seed):
  return os.path.join(workdir, model_name, f'seed{seed}')


def run_config(config, model_name, seed):
  """The training config of one run: the sweep's shared one (config.base) with model.name
  (and the model.block_design and model.shortcut its name sets, if any) and train.seed set."""
  one = config.base.copy_and_resolve_references()
  model, settings = results.parse_run_name(model_name)
  one.model.name = model
  for field, value in settings.items():
    one.model[field] = value
  one.train.seed = int(seed)
  return one


def probe_batch(preprocess, dataset, size):
  """A fixed batch of training images, preprocessed as the training step does
  (`preprocess`: the run's config.data.preprocess).

  The same images (chosen with a fixed generator, independent of the run's seed) for
  every model, so the probes of all runs compare like with like.
  """
  count = min(int(size), len(dataset.train))
  index = np.sort(np.random.default_rng(0).choice(len(dataset.train), count, replace=False))
  mean, std = channel_stats(dataset.train) if preprocess == 'standardize' else (None, None)
  images = preprocess_images(jnp.asarray(dataset.train.images[index]), preprocess, mean, std)
  return {'image': images, 'label': jnp.asarray(dataset.train.labels[index])}


def starting_variables(train_config, model, image_shape):
  """The variables a run starts from, as the training loop makes them: model.init with the
  seed's init key (config.train.seed, as resnet_jax.train.state.create_train_state), then
  the pretrained weights of config.finetune.init_from if it names any; no optimizer state.

  Run op by op rather than jitted: compiling the initialiser of a deep net costs seconds
  of CPU, running it eagerly a fraction of one (after a one-off warm-up per process). The
  values agree with the jitted ones to float32 rounding.
  """
  init_key = state_lib.seed_keys(train_config.train.seed)[0]
  variables = model.init(init_key, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                         train=False)
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  if train_config.finetune.init_from:
    variables = weights.initial_variables(train_config.finetune, model, variables)
  return variables


def probe_gradient_flow(train_config, model, dataset, directory, batch):
  """Per-layer gradient norms at initialisation and at every checkpoint kept in `directory`.

  Returns:
    [{'step': int, 'layers': {layer path: float}}], by step; step 0 is where the run
    started (starting_variables: rebuilt from the seed and finetune.init_from as the loop
    builds it).
  """
  # The probe's batch is on this host: synchronised BN's statistics over all devices are
  # then those of this batch, which the model computes without a device axis.
  probe_model = model.clone(bn_axis_name=None)

  def snapshot(step, params, batch_stats):
    # Op by op, like the initialisation: a handful of probes per run cost less CPU than
    # compiling the gradient of every model (seconds each on a CPU).
    norms = layer_gradient_norms(probe_model, {'params': params, 'batch_stats': batch_stats},
                                 batch, True)
    return {'step': int(step), 'layers': {k: float(v) for k, v in norms.items()}}

  init = starting_variables(train_config, model, dataset.train.image_shape)
  snapshots = [snapshot(0, init['params'], init['batch_stats'])]
  checkpointer = checkpoint.Checkpointer(directory, train_config.run.keep_checkpoints)
  try:
    for step in checkpointer.all_steps():
      if step == 0:
        continue
      state, _ = checkpointer.read(step)
      snapshots.append(snapshot(step, state['params'], state['batch_stats']))
  finally:
    checkpointer.close()
  return snapshots


def _config_json(train_config):
  """The run's config as recorded in result.json: every group but those that cannot
  change what it computes (run, speed) and data.cache_dir (config.FREE_ON_RESUME)."""
  values = json.loads(train_config.to_json_best_effort())
  values = {group: fields for group, fields in values.items() if group not in ('run', 'speed')}
  if isinstance(values.get('data'), dict):
    values['data'] = {k: v for k, v in values['data'].items() if k != 'cache_dir'}
  return values


def _config_differences(result_path, recorded, now):
  """Dotted fields whose values differ. A field only one side has is a field added to (or
  removed from) base_config since the run: the run used its default, so it is not a
  difference. ConfigError if the run recorded the earlier flat config."""
  recorded = storage.as_json(recorded or {})
  config_lib.check_grouped(recorded, f"{result_path!r} (its 'config')")
  recorded, now = config_changes.flat_fields(recorded), config_changes.flat_fields(now)
  return {k: (recorded[k], now[k]) for k in sorted(set(recorded) & set(now))
          if recorded[k] != now[k]}


def is_finished(config, workdir, model_name, seed) -> bool:
  """Whether the run has its result.json (it is skipped); ConfigError if that was written
  with another training config."""
  directory = run_dir(workdir, model_name, seed)
  result_path = os.path.join(directory, results.RESULT_FILE)
  if not os.path.isfile(result_path):
    return False
  with open(result_path) as f:
    finished = json.load(f)
  differences = _config_differences(result_path, finished.get('config'),
                                    _config_json(run_config(config, model_name, seed)))
  if differences:
    details = ', '.join(f'{k}: {old!r} there, {new!r} now'
                        for k, (old, new) in list(differences.items())[:3])
    raise ConfigError(
        f'{result_path} was written by a run with another training config ({details}); '
        f'expected the same config.base to skip it. Use a new workdir, or delete '
        f'{directory} to retrain it.')
  return True


def check_runs(config, workdir, dataset) -> None:
  """ConfigError naming the first run of the sweep that cannot train on `dataset` (its
  classes and image size against each run's config, as training checks them) or whose
  finished result was written with another config: every run is checked before the first
  trains, so that a sweep does not fail after hours of the runs before it."""
  for name in config.models:
    try:
      setup.check_data_fits(run_config(config, name, config.seeds[0]), dataset)
    except ConfigError as error:
      raise ConfigError(f'sweep config.models, the runs of {name!r}: {error}') from error
  for seed in config.seeds:
    for name in config.models:
      is_finished(config, workdir, name, seed)


def run_one(config, workdir, model_name, seed, dataset, train_fn):
  """Trains, probes and records one run; returns 'done', 'skipped' or 'preempted'."""
  directory = run_dir(workdir, model_name, seed)
  train_config = run_config(config, model_name, seed)
  result_path = os.path.join(directory, results.RESULT_FILE)
  if is_finished(config, workdir, model_name, seed):
    return 'skipped'
  model = setup.build_model(train_config)
  start = time.perf_counter()
  final = train_fn(train_config, directory, model=model, dataset=dataset)
  elapsed = time.perf_counter() - start
  if final.get('preempted'):
    return 'preempted'
  probe_start = time.perf_counter()
  batch = probe_batch(train_config.data.preprocess, dataset, config.probe_batch_size)
  snapshots = probe_gradient_flow(train_config, model, dataset, directory, batch)
  log.info('sweep: %s seed %d trained in %.0f s, gradient flow probed at steps %s in %.0f s',
           model_name, seed, elapsed, [s['step'] for s in snapshots],
           time.perf_counter() - probe_start)
  storage.write_json_atomic(os.path.join(directory, results.GRADIENT_FLOW_FILE),
                            {'probe_batch_size': int(batch['label'].shape[0]),
                             'snapshots': snapshots})
  params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(
      jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros(
          (1,) + dataset.train.image_shape, np.float32), train=False))['params'])))
  final_metrics = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
  storage.write_json_atomic(result_path, {
      'model': model_name, 'seed': int(seed), 'params': params, 'time_s': elapsed,
      'resumed_from': final.get('resumed_from'), 'final': final_metrics,
      'config': _config_json(train_config)})
  return 'done'


def run_sweep(config, workdir, *, train_fn=None):
  """Trains every (model, seed) of the sweep that is not finished, then writes the results.

  Args:
    config: a sweep config (see the module docstring).
    workdir: the sweep's directory; runs go to <workdir>/<model>/seed<k>.
    train_fn: the training function (default resnet_jax.train.train_and_evaluate).

  Returns:
    {'status': {(model, seed): 'done' | 'skipped' | 'preempted'}, 'rows': summary rows,
     'markdown': the table, 'paths': written files, 'preempted': bool}. A preempted
    sweep (a signal stopped a run after it saved a checkpoint) stops there and writes
    no tables.
  """
  train_fn = train_fn or loop.train_and_evaluate
  check_sweep_config(config)
  dataset = setup.load_data(config.base.data)
  check_runs(config, workdir, dataset)
  start = _SweepStart(workdir)
  storage.write_text_atomic(start.config_path, config.to_json_best_effort(indent=2) + '\n')
  status = {}
  try:
    # Seed-major, so that a sweep cut short already holds every model once.
    for seed in config.seeds:
      for model_name in config.models:
        log.info('sweep: %s seed %d', model_name, seed)
        status[(model_name, seed)] = 'started'
        status[(model_name, seed)] = run_one(config, workdir, model_name, seed, dataset,
                                             train_fn)
        if status[(model_name, seed)] == 'preempted':
          start.undo_unless_a_run_started(status)
          return {'status': status, 'rows': [], 'markdown': '', 'paths': [], 'preempted': True}
  except BaseException:
    start.undo_unless_a_run_started(status)
    raise
  return dict(write_report(workdir, config.get('title')), status=status, preempted=False)


class _SweepStart:
  """The sweep directory and its sweep_config.json, undone by a sweep that ends (rejected,
  failed or stopped) before any new run of it has started training or any run has finished:
  a run rejected or stopped at its start leaves nothing behind (train_and_evaluate's workdir
  claim), and neither does the sweep (an existing sweep_config.json gets its old text back).
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.config_path = os.path.join(workdir, 'sweep_config.json')
    self.created_dirs = workdir_claim.missing_directories(workdir)
    self.previous_config = None
    if os.path.isfile(self.config_path):
      with open(self.config_path) as f:
        self.previous_config = f.read()
    self.runs_before = {(model, seed) for model, seed in _run_dirs(workdir)}
    os.makedirs(workdir, exist_ok=True)

  def undo_unless_a_run_started(self, status: dict) -> None:
    started = [key for key in status if key not in self.runs_before
               and os.path.isdir(run_dir(self.workdir, *key))]
    if started or 'done' in status.values():
      return
    if self.previous_config is None:
      if os.path.isfile(self.config_path):
        os.remove(self.config_path)
    else:
      storage.write_text_atomic(self.config_path, self.previous_config)
    for directory in self.created_dirs:
      try:
        os.rmdir(directory)  # Only if empty.
      except OSError:
        break


def _run_dirs(workdir: str) -> list:
  """(model directory name, seed) of the run directories under `workdir`."""
  found = []
  if not os.path.isdir(workdir):
    return found
  for model in os.listdir(workdir):
    model_dir = os.path.join(workdir, model)
    if os.path.isdir(model_dir):
      found += [(model, int(name[4:])) for name in os.listdir(model_dir)
                if name.startswith('seed') and name[4:].isdigit()]
  return found


def write_report(workdir, title=None):
  """results.csv, results.md, training_error.png and gradient_flow.png from the finished runs."""
  runs = results.collect_runs(workdir)
  rows = results.summarize(runs)
  csv_path, md_path = results.write_results(rows, workdir)
  error_path = plots.plot_training_error(runs, os.path.join(workdir, 'training_error.png'), title)
  flow_path = plots.plot_gradient_flow(runs, os.path.join(workdir, 'gradient_flow.png'), title)
  return {'rows': rows, 'markdown': results.report_markdown(rows),
          'paths': [csv_path, md_path, error_path, flow_path]}


def check_sweep_config(config):
  """ConfigError naming the first sweep field that is missing or wrong."""
  for field in ('base', 'models', 'seeds', 'probe_batch_size'):
    if field not in config:
      raise ConfigError(f'sweep config.{field} is missing; expected the fields of '
                        'experiments/configs/ablation_digits.py')
  if not isinstance(config.base, ml_collections.ConfigDict):
    raise ConfigError(f'sweep config.base is a {type(config.base).__name__}; expected a '
                      'ConfigDict from resnet_jax.train.config.base_config()')
  if not config.models or len(set(config.models)) != len(config.models):
    raise ConfigError(f'sweep config.models={tuple(config.models)!r}: expected distinct model '
                      'names')
  if not config.seeds or len(set(config.seeds)) != len(config.seeds) or not all(
      isinstance(s, int) and s >= 0 for s in config.seeds):
    raise ConfigError(f'sweep config.seeds={tuple(config.seeds)!r}: expected distinct integers '
                      '>= 0')
  if not isinstance(config.probe_batch_size, int) or config.probe_batch_size < 1:
    raise ConfigError(f'sweep config.probe_batch_size={config.probe_batch_size!r}: expected a '
                      'positive integer')
  # Every model name, then every run's training config and network, before the first run
  # trains: a field that does not suit one of the models (model.zero_init_last_bn on a
  # plain twin, an image size too small for it) stops the sweep here.
  for name in config.models:
    try:
      models.parse_model_name(results.parse_run_name(name)[0])
      train_config = run_config(config, name, config.seeds[0])
      config_lib.validate_config(train_config)
      setup.build_model(train_config)
    except ConfigError as error:
      raise ConfigError(f'sweep config.models, the runs of {name!r}: {error}') from error
