"""The outside reference of the benchmark: a train step as a plain Flax user writes it.

Not train.py's code on purpose: `jax.jit` of `apply` with mutable `batch_stats` and an
optax update through `flax.training.train_state.TrainState` (as Flax's BatchNorm guide and
examples/imagenet write it), one device, one dispatch per step, float32 images scaled on
the host and sent every step (what a course notebook feeds). Timing train.py's programs
against it says what the library's machinery costs or buys over the obvious step.
"""
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from resnet_jax.data.fake_images import load_fake_imagenet
from resnet_jax.perf import hardware


class FlaxBaselineState(train_state.TrainState):
  """Flax's TrainState with the batch statistics, as in Flax's BatchNorm guide."""
  batch_stats: Any


def flax_train_step(num_classes: int):
  """A plain Flax train step: (state, images, labels) -> (state, loss, accuracy)."""

  def train(state: FlaxBaselineState, images, labels):
    def loss_fn(params):
      logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                       images, train=True, mutable=['batch_stats'])
      one_hot = jax.nn.one_hot(labels, num_classes)
      loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), one_hot).mean()
      return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, loss, accuracy

  return train


class FlaxBaselinePath:
  """The plain Flax step over a few random host batches; a benchmark path named 'baseline'.

  Args:
    workload: what to train (benchmarking.Workload); its optimizer is optax's stock adam
      (or SGD with momentum 0.9) at the config's learning rate.
    model: the flax module (the same one train.py's paths train).
    learning_rate: the workload config's learning rate.
  """
  name = 'baseline'
  program = None
  chunk_steps = steps_per_dispatch = 1

  def __init__(self, workload, model, learning_rate: float, num_host_batches: int = 4,
               seed: int = 0):
    self.workload = workload
    self.devices = (jax.local_devices()[0],)
    size = workload.image_size
    data = load_fake_imagenet(image_size=size, num_train=num_host_batches * workload.batch_size,
                              num_test=1, num_classes=workload.num_classes, seed=seed)
    shape = (num_host_batches, workload.batch_size)
    self.images = (data.train.images.astype(np.float32) / 255.0).reshape(shape + (size, size, 3))
    self.labels = data.train.labels.reshape(shape)
    tx = (optax.sgd(learning_rate, momentum=0.9) if workload.optimizer == 'sgd'
          else optax.adam(learning_rate))
    variables = jax.jit(lambda: model.init(jax.random.key(seed),
                                           jnp.zeros((1, size, size, 3)), train=False))()
    self.state = FlaxBaselineState.create(apply_fn=model.apply, params=variables['params'],
                                          batch_stats=variables['batch_stats'], tx=tx)
    self._step = jax.jit(flax_train_step(workload.num_classes), donate_argnums=(0,))
    self._position = 0
    self.last_metrics = None
    self.flops_per_step = None
    self.program_bytes = None

  def compile(self) -> float:
    """Traces and compiles the step; returns the seconds."""
    start = time.perf_counter()
    compiled = self._step.lower(self.state, self.images[0], self.labels[0]).compile()
    seconds = time.perf_counter() - start
    self.flops_per_step, self.program_bytes = hardware.compiled_cost(compiled)
    return seconds

  def run(self, num_steps: int) -> None:
    """Runs `num_steps` steps, cycling over the host batches; waits for the device."""
    for _ in range(num_steps):
      index = self._position % len(self.images)
      self._position += 1
      self.state, loss, accuracy = self._step(self.state, self.images[index],
                                              self.labels[index])
      self.last_metrics = (loss, accuracy)
    jax.block_until_ready((self.state, self.last_metrics))

  def steps_taken(self) -> int:
    return int(self.state.step)
