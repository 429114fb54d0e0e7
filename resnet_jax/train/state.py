"""The training state: every array a run needs to continue exactly, and nothing else.

The model's apply function and the optimizer are kept outside (closed over by the step
functions), so the state is a pytree of arrays: it is what pmap replicates and what a
checkpoint holds. The RNG is stored as raw key data (uint32) so that it is an ordinary
array on every backend and in every checkpoint format.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

# Independent random streams derived from the seed.
_INIT_STREAM, _STEP_STREAM, _DATA_STREAM = 0, 1, 2


@struct.dataclass
class TrainState:
  """step: int32 scalar (steps taken); params / batch_stats: the model's collections;
  opt_state: the optax state; rng: uint32 key data, constant over the run (step s uses
  fold_in(rng, s))."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  def step_key(self) -> jax.Array:
    """The key of the current step: a function of (seed, step) only, so resume is exact."""
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init key, step key data, data key) for a seed; independent streams."""
  root = jax.random.key(seed)
  return (jax.random.fold_in(root, _INIT_STREAM),
          jax.random.key_data(jax.random.fold_in(root, _STEP_STREAM)),
          jax.random.fold_in(root, _DATA_STREAM))


def create_train_state(model, tx: optax.GradientTransformation, image_shape: tuple,
                       seed: int) -> TrainState:
  """Initialises the model (jitted, on the default device) and the optimizer state."""
  init_key, step_key_data, _ = seed_keys(seed)

  @jax.jit
  def init():
    variables = model.init(init_key, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                           train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params), rng=step_key_data)

  return init()


def abstract_train_state(model, tx: optax.GradientTransformation, image_shape: tuple,
                         seed: int) -> TrainState:
  """The shapes and dtypes of `create_train_state`, computed without running it."""
  return jax.eval_shape(lambda: create_train_state(model, tx, image_shape, seed))


def state_to_host(state: TrainState) -> dict:
  """The state as a nested dict of numpy arrays (optax named tuples become dicts).

  Checkpoints hold this form: plain string keys, independent of optax's classes.
  """
  return jax.tree.map(np.asarray, flax.serialization.to_state_dict(state))


def state_from_host(template: TrainState, tree: dict) -> TrainState:
  """Inverse of `state_to_host`, shaped like `template`."""
  return flax.serialization.from_state_dict(template, tree)


def unreplicate(tree):
  """The first device's copy of a pmapped (leading device axis) pytree, on the host."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)
