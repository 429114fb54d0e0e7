"""Seeded, filter-normalised random directions in a network's parameter space.

Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets"
(NeurIPS 2018), section 4: a Gaussian direction d has each filter rescaled to the norm of
the corresponding filter of the weights, ||d_ij|| <- ||d_ij|| / ||d_ij|| * ||theta_ij||,
so that a step of 1 along d moves every filter by its own size and the scale invariance
that BatchNorm gives each filter does not distort the picture. Parameters with at most
one dimension (BatchNorm scales and offsets, biases) are zero in the direction, as the
paper's code does (`ignore='biasbn'`).

A filter is one output unit: flax kernels keep output features on their last axis
([kh, kw, in, out] for a conv, [in, out] for a dense layer), so filter j of a kernel is
`kernel[..., j]`.

Directions are a pure function of (seed, index, parameter shapes): `random_directions`
with the same seed gives the same arrays, so a surface can be recomputed; they are
also saved with the results (`directions_to_arrays` / `directions_from_arrays`).
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from resnet_jax.errors import ConfigError

# Keeps a filter of all-zero weights (a dead unit) from dividing by zero: its direction
# filter becomes zero, like the weights'.
_EPS = 1e-10


def is_filter_weight(leaf) -> bool:
  """True for kernels (ndim >= 2), which directions move; False for BN parameters and biases."""
  return np.ndim(leaf) >= 2


def filter_normalize(direction, params):
  """`direction` with each filter rescaled to the norm of the same filter of `params`;
  leaves of one dimension or none (BN, biases) set to zero.

  Args:
    direction: a pytree shaped like `params`.
    params: the weights (a nested dict of arrays).

  Returns:
    The normalised direction, float32, shaped like `params`.
  """
  def one(d, w):
    d = jnp.asarray(d, jnp.float32)
    w = jnp.asarray(w, jnp.float32)
    if not is_filter_weight(w):
      return jnp.zeros_like(w)
    axes = tuple(range(w.ndim - 1))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
    return d * (w_norm / (d_norm + _EPS))
  return jax.tree.map(one, direction, params)


def random_direction(seed: int, index: int, params):
  """Direction `index` of `seed`: Gaussian, then filter-normalised against `params`.

  Each leaf's draw comes from fold_in(fold_in(key(seed), index), position of the leaf in
  sorted path order), so it depends only on the seed, the index and the shapes.
  """
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ConfigError(f'direction seed={seed!r}; expected an integer >= 0')
  key = jax.random.fold_in(jax.random.key(int(seed)), int(index))
  flat = traverse_util.flatten_dict(params)
  draws = {}
  for position, path in enumerate(sorted(flat, key=lambda p: tuple(str(k) for k in p))):
    leaf = flat[path]
    draws[path] = jax.random.normal(jax.random.fold_in(key, position), np.shape(leaf),
                                    jnp.float32)
  return filter_normalize(traverse_util.unflatten_dict(draws), params)


def random_directions(seed: int, count: int, params) -> list:
  """`count` independent filter-normalised directions (1 for a line, 2 for a surface)."""
  return [random_direction(seed, i, params) for i in range(count)]


def directions_to_arrays(directions, prefix: str = 'direction') -> dict:
  """{'<prefix><i>/<path>': numpy array}: directions as flat arrays for an .npz file."""
  out = {}
  for i, direction in enumerate(directions):
    for path, leaf in traverse_util.flatten_dict(direction).items():
      out[f'{prefix}{i}/' + '/'.join(str(k) for k in path)] = np.asarray(leaf)
  return out


def directions_from_arrays(arrays, prefix: str = 'direction') -> list:
  """Inverse of `directions_to_arrays` (an .npz file's mapping works)."""
  by_index = {}
  for name in arrays.keys():
    head, _, path = name.partition('/')
    if not head.startswith(prefix) or not head[len(prefix):].isdigit():
      continue
    by_index.setdefault(int(head[len(prefix):]), {})[tuple(path.split('/'))] = np.asarray(
        arrays[name])
  return [traverse_util.unflatten_dict(by_index[i]) for i in sorted(by_index)]
