"""Hessian curvature without forming the Hessian: Hessian-vector products and Lanczos.

`hvp` is forward-over-reverse differentiation, `jax.jvp` of `jax.grad`: one product costs
a few gradients, whatever the number of parameters. `lanczos_eigenvalues` runs m steps of
the Lanczos iteration on such products (with full reorthogonalisation, so that m steps in
float32 stay accurate) and returns the Ritz values, the eigenvalues of the m x m
tridiagonal matrix: its extremes approach the Hessian's extreme eigenvalues from inside
the spectrum, the largest one fast (it is usually well separated), the smallest more
slowly when it sits in the dense cluster near zero. With m equal to the number of
parameters they are exact.

Li et al. 2018 (section 6) map the ratio |lambda_min / lambda_max| over a loss surface:
near zero where the surface is convex along every direction, larger where it has
directions of negative curvature of comparable size. Because the smallest Ritz value is
never below lambda_min, the ratio from m < n steps is never above the true ratio: a
large value is a real finding, a small one an upper bound of the truth from below.

`hvp` and `flat_hvp`'s products are pure functions (jit them); the parameters are raveled
into one float32 vector (jax.flatten_util.ravel_pytree).
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from resnet_jax.errors import ConfigError


def hvp(loss_fn, params, vector):
  """The Hessian of `loss_fn` at `params` times `vector` (a pytree shaped like params)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def flat_hvp(loss_fn, params):
  """(matvec, dimension): v -> H v on raveled float32 vectors, H the Hessian at `params`."""
  flat, unravel = ravel_pytree(params)

  def matvec(v):
    return ravel_pytree(hvp(loss_fn, params, unravel(v.astype(flat.dtype))))[0]

  return matvec, flat.shape[0]


def lanczos_eigenvalues(matvec, dimension: int, steps: int, key):
  """Ritz values (ascending, numpy [steps]) of `steps` Lanczos iterations on a symmetric
  operator.

  Args:
    matvec: v -> A v on float32 vectors of length `dimension` (A symmetric); jit it.
    dimension: the vectors' length.
    steps: Lanczos iterations m (1 <= m <= dimension); each costs one product.
    key: a jax.random key for the starting vector.

  The iteration is a Python loop around `matvec` rather than a `lax.fori_loop`: XLA:CPU
  ran a Hessian-vector product about ten times slower inside a loop body than as a
  program of its own (measured: 8.7 s against 0.8 s per product of a CIFAR ResNet-20).
  After a breakdown (an invariant subspace found: the next residual is ~0) it restarts
  from a fresh random vector orthogonal to the basis so far, so the Ritz values stay
  eigenvalues of A.
  """
  if not 1 <= steps <= dimension:
    raise ConfigError(f'Lanczos steps={steps}; expected between 1 and the number of '
                      f'parameters ({dimension})')
  keys = jax.random.split(key, steps + 1)
  # The basis lives on the host, in float64: a few vectors of the parameters' size, and
  # numpy's products do not compile anew for every basis size as eager jnp ones would.
  basis = np.zeros((steps, dimension))
  alphas, betas = np.zeros(steps), np.zeros(steps)

  def orthogonalize(w, count):
    # Twice ("twice is enough", Kahan/Parlett): orthogonality is otherwise lost.
    for _ in range(2):
      w = w - basis[:count].T @ (basis[:count] @ w)
    return w

  def random_unit(index, count):
    w = orthogonalize(np.asarray(jax.random.normal(keys[index], (dimension,)), np.float64),
                      count)
    return w / np.linalg.norm(w)

  basis[0] = random_unit(0, 0)
  for j in range(steps):
    w = np.asarray(matvec(jnp.asarray(basis[j], jnp.float32)), np.float64)
    alphas[j] = w @ basis[j]
    if j + 1 == steps:
      break
    w = orthogonalize(w, j + 1)
    beta = np.linalg.norm(w)
    if beta <= 1e-6 * (np.max(np.abs(alphas[:j + 1])) + 1e-30):
      basis[j + 1] = random_unit(j + 1, j + 1)  # betas[j] stays 0: T splits into blocks.
    else:
      basis[j + 1] = w / beta
      betas[j] = beta
  tridiagonal = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
  return np.linalg.eigvalsh(tridiagonal)


def extreme_eigenvalues(loss_fn, params, steps: int, key) -> tuple[float, float]:
  """(lambda_min, lambda_max) of the Hessian of `loss_fn` at `params`, from the extreme Ritz
  values of `steps` Lanczos iterations (see the module docstring for their accuracy)."""
  matvec, dimension = flat_hvp(loss_fn, params)
  ritz = lanczos_eigenvalues(jax.jit(matvec), dimension, steps, key)
  return float(ritz[0]), float(ritz[-1])


def curvature_ratio(lambda_min, lambda_max):
  """|lambda_min / lambda_max|: Li et al.'s measure of non-convexity (small where convex)."""
  return np.abs(lambda_min) / np.maximum(np.abs(lambda_max), 1e-30)
