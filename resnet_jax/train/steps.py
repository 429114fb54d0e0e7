"""The per-device training and evaluation steps, and the three pmapped programs built from them.

`train_step` and `eval_step` are pure per-device functions meant to run inside
`jax.pmap(axis_name='batch')`: gradients and metrics are averaged over that axis, batch
statistics too (unless BatchNorm already synchronises them, sync BN). Both take a numpy
batch the host pipeline made (resnet_jax.data.pipeline); the only work on the images here
is what must run on the device: the Inception crop's resize where the batch carries boxes
on canvases (box_resize), and the preprocessing to float.

`make_step_functions` builds a run's programs (StepFunctions): one training step, a chunk
of k steps in one dispatch (`lax.scan` over k stacked batches), one evaluation step. A
chunk of k steps computes exactly what k single steps do.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from resnet_jax.train import box_resize
from resnet_jax.train.preprocess import preprocess
from resnet_jax.train.state import TrainState

AXIS = 'batch'
# Evaluation reports top-5 accuracy too from this many classes on (as ImageNet results do).
TOP5_MIN_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """Everything static the steps need besides the model and the optimizer."""
  num_classes: int
  label_smoothing: float = 0.0
  preprocess: str = 'scale'
  mean: Optional[tuple] = None  # Per-channel, for preprocess='standardize'.
  std: Optional[tuple] = None
  nan_policy: str = 'raise'
  sync_bn: bool = False
  image_size: int = 0  # The side crop boxes on canvases are resized to (batches with a 'box').

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, mean=None, std=None
                  ) -> 'StepSettings':
    """The settings a training config asks for; mean/std: per-channel statistics of the
    training split, for preprocess='standardize'."""
    return cls(
        num_classes=config.model.num_classes, label_smoothing=float(config.train.label_smoothing),
        preprocess=config.data.preprocess, mean=None if mean is None else tuple(mean),
        std=None if std is None else tuple(std), nan_policy=config.train.nan_policy,
        sync_bn=config.model.sync_bn, image_size=int(config.data.image_size))


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32, with optional label smoothing."""
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def network_input(batch: dict, settings: StepSettings):
  """A batch's uint8 images -> the network's input: crop boxes on canvases resized (where the
  batch has a 'box'), then preprocessed as the run's settings say."""
  pixels = batch['image']
  if 'box' in batch:
    pixels = box_resize.resize_boxes(pixels, batch['box'], settings.image_size)
  return preprocess(pixels, settings.preprocess, settings.mean, settings.std)


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               tx: optax.GradientTransformation, settings: StepSettings):
  """One optimisation step on this device's share of the batch.

  Args:
    state: the (replicated) training state.
    batch: {'image': uint8 [B, H, W, C], 'label': int [B]}, and 'box' int32 [B, 7] when
      the images are canvases to resize (box_resize).

  Returns:
    (new state, metrics) with metrics {'loss', 'accuracy', 'finite'} averaged over all
    devices; 'finite' is 1.0 when loss, gradients and the updated state were finite.
  """
  images = network_input(batch, settings)
  labels = batch['label']

  def loss_fn(params):
    logits, updated = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                                  train=True, mutable=['batch_stats'])
    loss = cross_entropy(logits, labels, settings.num_classes, settings.label_smoothing).mean()
    return loss, (logits, updated.get('batch_stats', {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = device_mean(grads)
  if not settings.sync_bn:
    # Each device normalised with its own batch; average the running statistics so the
    # replicas stay identical.
    batch_stats = device_mean(batch_stats)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  loss, accuracy = device_mean((loss, accuracy))
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
  # An update can overflow where the loss and gradients were finite (a huge learning rate);
  # a state holding non-finite values must not be kept, nor checkpointed. The optimizer
  # state needs no check of its own: SGD's momentum and Adam's moments are averages of
  # gradients (and of their squares, whose sum the norm above already bounds), finite
  # while the gradients are; whatever else goes wrong in an update reaches the
  # parameters. Leaving out its 2 x 161 arrays makes ResNet-50's step compile faster.
  finite &= all_finite((params, batch_stats))
  if settings.nan_policy == 'skip':
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params = keep(params, state.params)
    opt_state = keep(opt_state, state.opt_state)
    batch_stats = keep(batch_stats, state.batch_stats)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, {'loss': loss, 'accuracy': accuracy, 'finite': finite}


def device_mean(tree):
  """`tree` averaged over the devices of the step (jax.lax.pmean). On one device it is
  `tree` itself: XLA:CPU would still run an all-reduce that copies every leaf."""
  return tree if jax.lax.axis_size(AXIS) == 1 else jax.lax.pmean(tree, AXIS)


def all_finite(tree) -> jax.Array:
  """True when every floating-point value in `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def eval_step(state: TrainState, batch: dict, *, model: nn.Module, settings: StepSettings):
  """Sums over this step's evaluation batch, summed over all devices.

  Args:
    batch: {'image', 'label', 'mask'}; mask is 1.0 for real examples, 0.0 for padding.

  Returns:
    {'loss_sum', 'correct_sum', 'count'} (float32), and 'top5_correct_sum' with
    TOP5_MIN_CLASSES classes or more: padding contributes nothing, so summing over the
    batches counts every example once.
  """
  logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                       network_input(batch, settings), train=False)
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  loss = cross_entropy(logits, labels, settings.num_classes)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  sums = {'loss_sum': jnp.sum(loss * mask), 'correct_sum': jnp.sum(correct * mask),
          'count': jnp.sum(mask)}
  if settings.num_classes >= TOP5_MIN_CLASSES:
    _, top5 = jax.lax.top_k(logits, 5)
    in_top5 = jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32)
    sums['top5_correct_sum'] = jnp.sum(in_top5 * mask)
  return jax.lax.psum(sums, AXIS)


def eval_sum_names(num_classes: int) -> tuple[str, ...]:
  """The names of the sums `eval_step` returns for a net with `num_classes` classes."""
  names = ('loss_sum', 'correct_sum', 'count')
  return names + ('top5_correct_sum',) if num_classes >= TOP5_MIN_CLASSES else names


def empty_train_sums() -> dict:
  """Running sums of a chunk of steps; see `add_step_metrics`."""
  return {'loss_sum': jnp.zeros((), jnp.float32), 'accuracy_sum': jnp.zeros((), jnp.float32),
          'finite_steps': jnp.zeros((), jnp.int32), 'steps': jnp.zeros((), jnp.int32),
          'first_nonfinite_step': jnp.full((), -1, jnp.int32)}


def add_step_metrics(sums: dict, metrics: dict, step: jax.Array) -> dict:
  """Adds one step's metrics (from `train_step`, taken at `step`) to the sums.

  Non-finite steps are counted, not summed, and the first one's step is kept, so that
  the host can check a whole chunk for NaNs with one small fetch.
  """
  finite = metrics['finite']
  return {
      'loss_sum': sums['loss_sum'] + jnp.where(finite, metrics['loss'], 0.0),
      'accuracy_sum': sums['accuracy_sum'] + jnp.where(finite, metrics['accuracy'], 0.0),
      'finite_steps': sums['finite_steps'] + finite.astype(jnp.int32),
      'steps': sums['steps'] + 1,
      'first_nonfinite_step': jnp.where((sums['first_nonfinite_step'] < 0) & ~finite,
                                        step, sums['first_nonfinite_step']),
  }


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The pmapped programs of a run (each compiled on first use); which one runs is the
  feed's business (resnet_jax.train.feed).

  Attributes:
    train_step: (state, batch) -> (state, sums); one step. The state is donated; sums are
      the step's metric sums (see `add_step_metrics`).
    train_chunk: (state, batches) -> (state, sums); k steps in one dispatch, `batches`
      holding k stacked batches per device [k, B, ...]: for accelerators, where a dispatch
      per step costs more than the step. XLA:CPU runs convolutions inside loops many
      times slower than outside (jax-ml/jax#12868), so CPU runs take `train_step`.
    eval_step: (state, batch) -> the evaluation sums of one batch (see `eval_step`).
  """
  train_step: Callable
  train_chunk: Callable
  eval_step: Callable


def default_chunk_on_device() -> bool:
  """Chunks of steps in one dispatch everywhere except on CPU (see StepFunctions)."""
  return jax.default_backend() != 'cpu'


def make_step_functions(model: nn.Module, tx: optax.GradientTransformation,
                        settings: StepSettings, devices=None) -> StepFunctions:
  """Builds the pmapped train/eval programs of one run.

  Args:
    devices: the devices to pmap over; None (what a run passes): every device of every
      process, so that gradients are averaged over the whole global batch. A subset is for
      single-process measurements (perf/benchmarking).
  """
  step = lambda state, batch: train_step(state, batch, model=model, tx=tx, settings=settings)

  def train_one(state, batch):
    new_state, metrics = step(state, batch)
    return new_state, add_step_metrics(empty_train_sums(), metrics, state.step)

  def train_chunk(state, batches):
    def body(carry, batch):
      state, sums = carry
      new_state, metrics = step(state, batch)
      return (new_state, add_step_metrics(sums, metrics, state.step)), None
    (state, sums), _ = jax.lax.scan(body, (state, empty_train_sums()), batches)
    return state, sums

  pmap = lambda f, **kw: jax.pmap(f, axis_name=AXIS, devices=devices, **kw)
  return StepFunctions(
      train_step=pmap(train_one, donate_argnums=(0,)),
      train_chunk=pmap(train_chunk, donate_argnums=(0,)),
      eval_step=pmap(lambda state, batch: eval_step(state, batch, model=model,
                                                    settings=settings)),
  )
