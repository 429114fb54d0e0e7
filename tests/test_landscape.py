"""Loss landscapes and curvature (resnet_jax.landscapes: directions, surface, curvature,
probe) and experiments/landscape.py."""
import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.flatten_util import ravel_pytree

from experiments import cli
from resnet_jax.ablation.gradient_flow import cross_entropy_loss
from resnet_jax.errors import ConfigError
from resnet_jax.landscapes import curvature, directions, probe, surface

ONE_ERROR_LINE = re.compile(r'error: [A-Za-z]+: [^\n]+\n')


class SmoothNet(nn.Module):
  """conv (with bias) -> BN -> tanh -> conv -> BN -> tanh -> mean -> Dense: every kind of
  parameter a ResNet has, and a loss smooth enough for finite differences."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(3, (2, 2), name='conv1')(x)
    x = jnp.tanh(nn.BatchNorm(use_running_average=not train, name='bn1')(x))
    x = nn.Conv(2, (2, 2), use_bias=False, name='conv2')(x)
    x = jnp.tanh(nn.BatchNorm(use_running_average=not train, name='bn2')(x))
    return nn.Dense(3, name='head')(x.mean((1, 2)))


@pytest.fixture(scope='module')
def trained():
  """SmoothNet's variables with non-trivial BN statistics, and a batch of 16 images."""
  model = SmoothNet()
  images = jax.random.normal(jax.random.key(1), (16, 4, 4, 1))
  labels = jnp.arange(16) % 3
  variables = model.init(jax.random.key(0), images, train=False)
  _, updates = model.apply(variables, images * 2 + 0.5, train=True, mutable=['batch_stats'])
  return model, variables['params'], updates['batch_stats'], {'image': images, 'label': labels}


def _loss(model, batch_stats, batch):
  return lambda p: surface.evaluator(model, batch)(p, batch_stats)[0]


def test_hvp_matches_a_finite_difference_of_the_gradient(trained):
  model, params, batch_stats, batch = trained
  loss = _loss(model, batch_stats, batch)
  vector = directions.random_direction(3, 0, params)
  vector = jax.tree.map(lambda v: v + 0.1, vector)  # BN parameters and biases too.
  product = ravel_pytree(jax.jit(lambda p, v: curvature.hvp(loss, p, v))(params, vector))[0]
  eps = 1e-2
  grad = jax.jit(jax.grad(loss))
  shifted = lambda s: ravel_pytree(grad(jax.tree.map(lambda p, v: p + s * v, params,
                                                     vector)))[0]
  estimate = (shifted(eps) - shifted(-eps)) / (2 * eps)
  assert float(jnp.linalg.norm(product)) > 1e-2
  np.testing.assert_allclose(product, estimate, atol=2e-3 * float(jnp.abs(product).max()))


def _explicit_hessian(trained):
  model, params, batch_stats, batch = trained
  flat, unravel = ravel_pytree(params)
  loss = _loss(model, batch_stats, batch)
  hessian = jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat)
  return loss, params, np.linalg.eigvalsh(np.asarray(hessian, np.float64))


def test_lanczos_eigenvalues_match_the_explicit_hessian(trained):
  loss, params, exact = _explicit_hessian(trained)
  matvec, dimension = curvature.flat_hvp(loss, params)
  assert dimension == len(exact) == 58
  scale = np.abs(exact).max()
  full = curvature.lanczos_eigenvalues(jax.jit(matvec), dimension, dimension, jax.random.key(0))
  np.testing.assert_allclose(full, exact, atol=2e-3 * scale)
  # A few steps: the Ritz values lie inside the spectrum and the largest is already close.
  low, high = curvature.extreme_eigenvalues(loss, params, 20, jax.random.key(1))
  assert exact[0] - 1e-3 * scale <= low < 0 < high <= exact[-1] + 1e-3 * scale
  assert high == pytest.approx(exact[-1], rel=1e-2)
  assert exact[0] < 0  # The test model's loss is non-convex here, so lambda_min matters.


def test_lanczos_restarts_after_an_invariant_subspace():
  # Three distinct eigenvalues: the Krylov space is exhausted after three steps.
  diagonal = jnp.array([3.0, 3.0, -1.0, 0.5, 3.0, -1.0, 0.5, 0.5])
  ritz = curvature.lanczos_eigenvalues(lambda v: diagonal * v, 8, 8, jax.random.key(0))
  np.testing.assert_allclose(ritz, np.sort(np.asarray(diagonal)), atol=1e-5)
  with pytest.raises(ConfigError, match='Lanczos steps=9'):
    curvature.lanczos_eigenvalues(lambda v: v, 8, 9, jax.random.key(0))


def test_directions_are_filter_normalised_with_bn_and_biases_zero(trained):
  _, params, _, _ = trained
  direction = directions.random_direction(0, 0, params)
  flat_d, flat_w = (traverse_util.flatten_dict(t) for t in (direction, params))
  assert set(flat_d) == set(flat_w)
  kernels = 0
  for path, w in flat_w.items():
    d = np.asarray(flat_d[path])
    assert d.shape == w.shape and d.dtype == np.float32
    if path[-1] == 'kernel':
      kernels += 1
      axes = tuple(range(w.ndim - 1))
      norms = lambda a, axes=axes: np.sqrt(np.sum(np.square(a, dtype=np.float64), axis=axes))
      np.testing.assert_allclose(norms(d), norms(w), rtol=1e-5)
      assert not np.allclose(d, w)  # Random, not the weights themselves.
    else:  # BN scale and bias, conv and dense biases.
      assert np.all(d == 0), path
  assert kernels == 3


def test_directions_are_a_function_of_the_seed_and_round_trip(trained):
  _, params, _, _ = trained
  same = [directions.random_directions(7, 2, params) for _ in range(2)]
  flat = [directions.directions_to_arrays(s) for s in same]
  assert flat[0].keys() == flat[1].keys() and len(flat[0]) == 2 * len(
      traverse_util.flatten_dict(params))
  for key in flat[0]:
    np.testing.assert_array_equal(flat[0][key], flat[1][key])
  other = directions.directions_to_arrays(directions.random_directions(8, 2, params))
  kernel = 'direction0/head/kernel'
  assert not np.allclose(other[kernel], flat[0][kernel])
  assert not np.allclose(flat[0][kernel], flat[0]['direction1/head/kernel'])
  back = directions.directions_from_arrays(flat[0])
  assert len(back) == 2
  for i in range(2):
    jax.tree.map(np.testing.assert_array_equal, back[i], jax.tree.map(np.asarray, same[0][i]))
  with pytest.raises(ConfigError, match='seed=-1'):
    directions.random_direction(-1, 0, params)


def test_surface_at_the_origin_is_the_plain_evaluation_loss(trained):
  model, params, batch_stats, batch = trained
  logits = model.apply({'params': params, 'batch_stats': batch_stats}, batch['image'])
  plain_loss = float(cross_entropy_loss(logits, batch['label']))
  plain_accuracy = float(jnp.mean(jnp.argmax(logits, -1) == batch['label']))
  axis, points = surface.grid_coordinates(0.5, 3, 2)
  np.testing.assert_allclose(axis, [-0.5, 0, 0.5])
  dirs = directions.random_directions(0, 2, params)
  evaluate = surface.evaluator(model, batch)
  for batch_size in (1, 4):
    loss, accuracy = jax.jit(surface.surface, static_argnums=(0, 5))(
        evaluate, params, batch_stats, dirs, points, batch_size)
    assert loss.shape == (9,)
    assert float(loss[4]) == pytest.approx(plain_loss, rel=1e-5)
    assert float(accuracy[4]) == plain_accuracy
    # Any other point: the loss of the displaced weights; BN statistics stay the run's.
    moved = surface.displaced(params, dirs, points[0])
    expected = cross_entropy_loss(model.apply({'params': moved, 'batch_stats': batch_stats},
                                              batch['image']), batch['label'])
    assert float(loss[0]) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss[0]) != pytest.approx(plain_loss, rel=1e-3)


def test_interpolation_ends_at_both_variables(trained):
  model, params, batch_stats, batch = trained
  evaluate = surface.evaluator(model, batch)
  start = {'params': jax.tree.map(jnp.zeros_like, params), 'batch_stats': batch_stats}
  end = {'params': params, 'batch_stats': batch_stats}
  loss, _ = surface.interpolation(evaluate, start, end, np.array([0.0, 0.5, 1.0]))
  assert float(loss[0]) == pytest.approx(np.log(3), rel=1e-5)  # Zero weights: uniform.
  assert float(loss[2]) == pytest.approx(float(evaluate(params, batch_stats)[0]), rel=1e-5)


def test_settings_are_checked_by_name():
  settings = {'subset_size': 8, 'grid_size': 5, 'span': 1.0, 'grid_batch': 1,
              'curvature_grid_size': 3, 'lanczos_steps': 3, 'interpolation_points': 5,
              'direction_seed': 0, 'ratio_threshold': 0.1}
  probe.check_settings(settings)
  for name, value, fragment in [('grid_size', 0, 'expected a value >= 1'),
                                ('span', 0.0, 'expected a value > 0'),
                                ('lanczos_steps', 2.5, 'expected a int'),
                                ('direction_seed', -1, '>= 0')]:
    with pytest.raises(ConfigError, match=f'config.{name}=.*{fragment}'):
      probe.check_settings(dict(settings, **{name: value}))
  with pytest.raises(ConfigError, match='config.span is missing'):
    probe.check_settings({k: v for k, v in settings.items() if k != 'span'})


@pytest.mark.parametrize('argv,error_type,fragment', [
    (['--config.landscape.grid_size=0'], 'ConfigError', 'config.landscape.grid_size=0'),
    (['--config.models=("cifar_resnet7",)'], 'ConfigError', 'cifar_resnet7'),
    # A known model that the data does not fit, last: refused before the first run trains.
    (['--config.models=("cifar_plain8", "resnet18")', '--config.base.train.num_steps=2'],
     'ConfigError', "the runs of 'resnet18': image_size=8 is too small"),
    (['--workdir={tmp}/a_file'], 'UsageError', 'is a file'),
    (['--config.landscape.spann=1'], 'ConfigError', 'spann'),
])
def test_script_bad_input_is_one_line_and_writes_nothing(argv, error_type, fragment, tmp_path,
                                                         capsys):
  from experiments import landscape as script
  (tmp_path / 'a_file').write_text('notes')
  argv = [a.replace('{tmp}', str(tmp_path)) for a in argv]
  if not any(a.startswith('--workdir') for a in argv):
    argv.append(f'--workdir={tmp_path}/work')
  assert script.main(argv) == cli.EXIT_BAD_INPUT
  out, err = capsys.readouterr()
  assert ONE_ERROR_LINE.fullmatch(err) and out == '', err
  assert err.startswith(f'error: {error_type}: ') and fragment in err, err
  assert sorted(os.listdir(tmp_path)) == ['a_file']


@pytest.mark.slow
def test_quick_command_end_to_end(tmp_path, capsys):
  from experiments import landscape as script
  workdir = tmp_path / 'work'
  assert script.main(['--quick', f'--workdir={workdir}']) == 0
  out = capsys.readouterr().out
  assert '| cifar_resnet8 | 0 |' in out and '| cifar_plain8 | 0 |' in out
  probes = workdir / 'landscape'
  lines = [json.loads(line) for line in (probes / 'landscape.jsonl').read_text().splitlines()]
  assert [line['model'] for line in lines] == ['cifar_resnet8', 'cifar_plain8']
  for line in lines:
    result = probe.load_result(str(probes / f"{line['model']}_seed0.npz"))
    assert result['loss'].shape == (5, 5) and result['lambda_max'].shape == (3, 3)
    # The centre of the grid is the trained network's loss on the subset.
    assert line['loss_at_origin'] == pytest.approx(float(result['loss'][2, 2]))
    assert line['loss_min'] <= line['loss_at_origin'] <= line['loss_max']
    assert np.all(result['lambda_min'] <= result['lambda_max'])
    assert len(directions.directions_from_arrays(result)) == 2
    assert (probes / f"{line['model']}_seed0.png").stat().st_size > 10_000
  assert (probes / 'residual_vs_plain.png').is_file()
  # A second run reuses the trained runs and the saved probes, to the same numbers.
  before = (probes / 'cifar_plain8_seed0.npz').stat().st_mtime_ns
  assert script.main(['--quick', f'--workdir={workdir}']) == 0
  assert (probes / 'cifar_plain8_seed0.npz').stat().st_mtime_ns == before
  again = [json.loads(line) for line in (probes / 'landscape.jsonl').read_text().splitlines()]
  assert again == lines
