"""One training run probed: its loss surface, curvature map and interpolation, saved as .npz.

`probe_run` restores the run's latest checkpoint the way experiments/predict.py does
(resnet_jax.train.inference.load_predictor: the saved config's model, the checkpoint's
variables and preprocessing statistics), draws two filter-normalised directions from the
settings' seed and computes, on a fixed subset of the training split:
- the loss and accuracy on a grid_size x grid_size grid of [-span, span]^2 (landscape);
- lambda_min and lambda_max of the Hessian on a coarser curvature_grid_size grid of the
  same square (curvature; Lanczos with lanczos_steps products per point);
- the loss and accuracy along the line from the run's starting weights (rebuilt from its
  seed, resnet_jax.ablation.sweep.starting_variables) to its final ones, t in
  [-0.25, 1.25] (Goodfellow et al. 2015; Li et al. 2018, section 4).

Settings (a ConfigDict or a dict; experiments/configs/landscape_digits.py documents them):
subset_size, grid_size, span, grid_batch, curvature_grid_size, lanczos_steps,
interpolation_points, direction_seed, ratio_threshold.
"""
import io
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import storage
from resnet_jax.ablation.sweep import probe_batch, starting_variables
from resnet_jax.errors import ConfigError
from resnet_jax.landscapes import curvature, directions as directions_lib, surface as surface_lib
from resnet_jax.train.inference import load_predictor

SETTINGS = {'subset_size': int, 'grid_size': int, 'span': float, 'grid_batch': int,
            'curvature_grid_size': int, 'lanczos_steps': int, 'interpolation_points': int,
            'direction_seed': int, 'ratio_threshold': float}
# Where the interpolation runs: a quarter of the path beyond each end shows whether the
# end points sit in basins.
_INTERPOLATION_RANGE = (-0.25, 1.25)


def check_settings(settings, where: str = 'config') -> None:
  """ConfigError naming the first setting that is missing or out of range."""
  for name, kind in SETTINGS.items():
    if name not in settings:
      raise ConfigError(f'{where}.{name} is missing; expected the fields of '
                        'experiments/configs/landscape_digits.py')
    value = settings[name]
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
      raise ConfigError(f'{where}.{name}={value!r}; expected a {kind.__name__}')
    if name == 'span' and not value > 0:
      raise ConfigError(f'{where}.span={value!r}; expected a value > 0')
    smallest = 0 if name in ('direction_seed', 'ratio_threshold') else 1
    if value < smallest:
      raise ConfigError(f'{where}.{name}={value!r}; expected a value >= {smallest}')


def probe_run(run_directory: str, dataset, settings) -> dict:
  """The probes of one run (see the module docstring) as a dict of numpy arrays and numbers.

  Keys: step, xs (grid axis), loss and accuracy [grid, grid] (row i: first direction at
  xs[i]), curvature_xs, lambda_min and lambda_max [c, c], alphas, interpolation_loss and
  interpolation_accuracy [T], the directions ('direction<i>/<param path>'), the settings
  and the seconds each part took (time_surface_s, time_curvature_s,
  time_interpolation_s).
  """
  check_settings(settings)
  predictor = load_predictor(run_directory, 'latest')
  config = predictor.config
  # The subset is on this host: no device axis for synchronised BN (inference mode anyway).
  model = predictor.model.clone(bn_axis_name=None)
  params, batch_stats = predictor.variables['params'], predictor.variables['batch_stats']
  params = jax.tree.map(jnp.asarray, params)
  batch_stats = jax.tree.map(jnp.asarray, batch_stats)
  # The sweep's fixed batch: the same training images for every run, preprocessed as
  # training did.
  batch = probe_batch(config.data.preprocess, dataset, settings['subset_size'])
  directions = directions_lib.random_directions(settings['direction_seed'], 2, params)
  evaluate = surface_lib.evaluator(model, batch)
  out = {'step': predictor.step, 'subset_size': int(batch['label'].shape[0])}

  start = time.perf_counter()
  xs, points = surface_lib.grid_coordinates(settings['span'], settings['grid_size'], 2)
  surface = jax.jit(surface_lib.surface, static_argnums=(0, 5))
  loss, accuracy = surface(evaluate, params, batch_stats, directions, points,
                           settings['grid_batch'])
  shape = (len(xs), len(xs))
  out.update(xs=xs, loss=np.asarray(loss).reshape(shape),
             accuracy=np.asarray(accuracy).reshape(shape))
  out['time_surface_s'] = time.perf_counter() - start

  start = time.perf_counter()
  cxs, cpoints = surface_lib.grid_coordinates(settings['span'], settings['curvature_grid_size'], 2)
  lambda_min, lambda_max = surface_lib.curvature_surface(
      model, batch, params, batch_stats, directions, cpoints, settings['lanczos_steps'],
      settings['direction_seed'])
  shape = (len(cxs), len(cxs))
  out.update(curvature_xs=cxs, lambda_min=np.asarray(lambda_min).reshape(shape),
             lambda_max=np.asarray(lambda_max).reshape(shape))
  out['time_curvature_s'] = time.perf_counter() - start

  start = time.perf_counter()
  initial = starting_variables(config, model, dataset.train.image_shape)
  alphas = np.linspace(*_INTERPOLATION_RANGE, settings['interpolation_points'],
                       dtype=np.float32)
  line = jax.jit(surface_lib.interpolation, static_argnums=(0, 4))
  path_loss, path_accuracy = line(
      evaluate, jax.tree.map(jnp.asarray, initial),
      {'params': params, 'batch_stats': batch_stats}, alphas, settings['grid_batch'])
  out.update(alphas=alphas, interpolation_loss=np.asarray(path_loss),
             interpolation_accuracy=np.asarray(path_accuracy))
  out['time_interpolation_s'] = time.perf_counter() - start

  out.update(directions_lib.directions_to_arrays(directions))
  out.update({f'settings/{k}': settings[k] for k in SETTINGS})
  return out


def summarize(result: dict) -> dict:
  """The numbers of one probe: the loss at the trained weights and its range over the grid,
  the curvature there and the share of the curvature grid (all of it, and its inner square
  |coordinates| <= span / 2) where |lambda_min / lambda_max| > ratio_threshold."""
  loss = np.asarray(result['loss'])
  lambda_min, lambda_max = np.asarray(result['lambda_min']), np.asarray(result['lambda_max'])
  ratio = np.asarray(curvature.curvature_ratio(lambda_min, lambda_max))
  threshold = float(result['settings/ratio_threshold'])
  centre, ccentre = len(result['xs']) // 2, len(result['curvature_xs']) // 2
  # The inner square, |coordinates| <= span / 2: around the minimum, where the loss is
  # still of the order of the training loss rather than exploded.
  cxs = np.abs(np.asarray(result['curvature_xs']))
  inner = np.maximum.outer(cxs, cxs) <= cxs.max() / 2 + 1e-6
  return {
      'step': int(result['step']), 'subset_size': int(result['subset_size']),
      'loss_at_origin': float(loss[centre, centre]),
      'accuracy_at_origin': float(np.asarray(result['accuracy'])[centre, centre]),
      'loss_min': float(loss.min()), 'loss_max': float(loss.max()),
      'lambda_max_at_origin': float(lambda_max[ccentre, ccentre]),
      'lambda_min_at_origin': float(lambda_min[ccentre, ccentre]),
      'lambda_max_grid_max': float(lambda_max.max()),
      'ratio_threshold': threshold,
      'nonconvex_fraction': float(np.mean(ratio > threshold)),
      'ratio_median': float(np.median(ratio)),
      'nonconvex_fraction_inner': float(np.mean(ratio[inner] > threshold)),
      'interpolation_loss_max': float(np.max(result['interpolation_loss'])),
      'time_s': float(result['time_surface_s'] + result['time_curvature_s']
                      + result['time_interpolation_s']),
  }


def save_result(path: str, result: dict) -> None:
  """`result` as an .npz file, written through a temporary file (never half a file)."""
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in result.items()})
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  storage.write_bytes_atomic(path, buffer.getvalue())


def load_result(path: str) -> dict:
  """An .npz file of `save_result` back as a dict of numpy arrays (scalars as 0-d arrays)."""
  with np.load(path) as arrays:
    return {k: arrays[k] for k in arrays.files}
