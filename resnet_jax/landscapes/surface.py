"""Loss surfaces: training loss and accuracy around trained weights, and between two points.

Li et al. 2018 plot f(alpha, beta) = L(theta + alpha d1 + beta d2) for filter-normalised
random directions d1, d2 (resnet_jax.landscapes.directions), and the 1D interpolation
L((1 - t) theta_a + t theta_b) between two sets of weights (Goodfellow et al. 2015). The
loss is evaluated as the trained network is used: BatchNorm in inference mode with the
run's running statistics, on a fixed subset of the training split.

Grid points are evaluated by `jax.lax.map` with `batch_size`: that many points at a time
under `jax.vmap` (one program runs several perturbed networks), the chunks one after the
other, so memory grows with the chunk, not with the grid. On a CPU a chunk of 1 was the
fastest (29 ms a point against 110 ms for 4, CIFAR ResNet-20 on 256 digits): XLA:CPU
runs convolutions with batched kernels slowly. `surface` and `interpolation` are pure
(jit them); `curvature_surface` loops over its points on the host (see curvature.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from resnet_jax.ablation.gradient_flow import cross_entropy_loss
from resnet_jax.errors import ConfigError
from resnet_jax.landscapes.curvature import hvp, lanczos_eigenvalues


def evaluator(model, batch):
  """f(params, batch_stats) -> (mean cross-entropy, accuracy) on `batch`, BN in inference mode.

  Args:
    model: a flax.linen Module called as `model.apply(vars, x, train=False)`.
    batch: {'image': float [N, H, W, C] preprocessed, 'label': int [N]}.
  """
  def evaluate(params, batch_stats):
    logits = model.apply({'params': params, 'batch_stats': batch_stats}, batch['image'],
                         train=False).astype(jnp.float32)
    loss = cross_entropy_loss(logits, batch['label'])
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, accuracy
  return evaluate


def displaced(params, directions, coordinate):
  """params + sum_i coordinate[i] * directions[i]."""
  out = params
  for i, direction in enumerate(directions):
    out = jax.tree.map(lambda p, d, c=coordinate[i]: p + c * d.astype(p.dtype), out, direction)
  return out


def grid_coordinates(span: float, size: int, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
  """(axis values [size], points [size**dimensions, dimensions]): a square grid on
  [-span, span] per axis, row-major (the last direction varies fastest).

  An odd `size` puts a point at the origin, the trained weights themselves.
  """
  if not isinstance(size, int) or size < 1:
    raise ConfigError(f'grid size={size!r}; expected an integer >= 1')
  if not span > 0:
    raise ConfigError(f'grid span={span!r}; expected a positive number')
  axis = np.linspace(-span, span, size, dtype=np.float32) if size > 1 else np.zeros(
      1, np.float32)
  mesh = np.meshgrid(*([axis] * dimensions), indexing='ij')
  return axis, np.stack([m.reshape(-1) for m in mesh], axis=-1)


def surface(evaluate, params, batch_stats, directions, points, batch_size: int = 1):
  """(loss [P], accuracy [P]) at params + points[p] . directions, batch statistics fixed.

  Args:
    evaluate: f(params, batch_stats) -> (loss, accuracy), e.g. from `evaluator`.
    params: the weights at the origin.
    batch_stats: the run's BatchNorm statistics, used at every point.
    directions: a list of k directions shaped like params.
    points: float [P, k] coordinates.
    batch_size: grid points evaluated together under vmap.
  """
  def at(point):
    return evaluate(displaced(params, directions, point), batch_stats)
  return jax.lax.map(at, jnp.asarray(points, jnp.float32), batch_size=batch_size)


def interpolation(evaluate, start, end, alphas, batch_size: int = 1):
  """(loss [T], accuracy [T]) along (1 - t) start + t end, for t in `alphas`.

  `start` and `end` are {'params', 'batch_stats'}: both collections are interpolated, so
  each point is evaluated with statistics between the two runs' (at t = 0 and 1 exactly
  those of `start` and `end`).
  """
  def at(t):
    mix = jax.tree.map(lambda a, b: (1 - t) * a + t * b, start, end)
    return evaluate(mix['params'], mix['batch_stats'])
  return jax.lax.map(at, jnp.asarray(alphas, jnp.float32), batch_size=batch_size)


def curvature_surface(model, batch, params, batch_stats, directions, points, steps: int,
                      seed: int):
  """(lambda_min [P], lambda_max [P]) of the loss Hessian (with respect to every parameter)
  at params + points[p] . directions, from `steps` Lanczos iterations each.

  The loss is `evaluator`'s (BN in inference mode). One jitted Hessian-vector product,
  taking the grid point as an argument, serves every point; the Lanczos start vector of
  point p comes from fold_in(key(seed), p), so the map is a pure function of its inputs.
  """
  evaluate = evaluator(model, batch)
  _, unravel = ravel_pytree(params)

  @jax.jit
  def product(point, vector):
    here = displaced(params, directions, point)
    return ravel_pytree(hvp(lambda p: evaluate(p, batch_stats)[0], here, unravel(vector)))[0]

  points = np.asarray(points, np.float32)
  dimension = ravel_pytree(params)[0].shape[0]
  lows, highs = np.zeros(len(points)), np.zeros(len(points))
  for index, point in enumerate(points):
    key = jax.random.fold_in(jax.random.key(seed), index)
    ritz = lanczos_eigenvalues(lambda v, point=point: product(point, v), dimension, steps, key)
    lows[index], highs[index] = ritz[0], ritz[-1]
  return lows, highs
