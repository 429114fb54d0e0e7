"""The per-device training and evaluation steps, and the pmapped functions built from them.

`train_step` and `eval_step` are pure per-device functions meant to run inside
`jax.pmap(axis_name='batch')`: gradients and metrics are averaged over that axis, batch
statistics too (unless BatchNorm already synchronises them, sync BN).

`make_step_functions` builds the pmapped programs of a run from them (see StepFunctions for
their names): several steps per dispatch in an on-device loop over the device-resident
split, one step gathered from it, or one step on a batch the host sent. A chunk of 1 step
computes exactly what a chunk of 8 does, whichever program runs it.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from resnet_jax.data import augment as augment_lib, box_resize, pipeline
from resnet_jax.train.run_shape import RunShape
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
  crop_padding: int = 0
  flip: bool = False
  nan_policy: str = 'raise'
  sync_bn: bool = False
  image_size: int = 0  # The side streamed crop boxes are resized to (batches with a 'box').

  @classmethod
  def from_config(cls, config, mean=None, std=None) -> 'StepSettings':
    """The settings a training config asks for; mean/std: per-channel statistics of the
    training split, for preprocess='standardize'. Streamed data (dataset 'images') are
    augmented on the host (grain_pipeline), so their steps augment nothing."""
    on_device = config.data.name != 'images'
    return cls(
        num_classes=config.model.num_classes,
        label_smoothing=float(config.train.label_smoothing),
        preprocess=config.data.preprocess, mean=None if mean is None else tuple(mean),
        std=None if std is None else tuple(std),
        crop_padding=int(config.data.augment.crop_padding) if on_device else 0,
        flip=bool(config.data.augment.flip) and on_device, nan_policy=config.train.nan_policy,
        sync_bn=config.model.sync_bn, image_size=int(config.data.image_size))


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32, with optional label smoothing."""
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def network_input(images, settings: StepSettings):
  """uint8 images -> the network's input, as the run's settings preprocess them."""
  return augment_lib.preprocess(images, settings.preprocess, settings.mean, settings.std)


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               tx: optax.GradientTransformation, settings: StepSettings):
  """One optimisation step on this device's share of the batch.

  Args:
    state: the (replicated) training state.
    batch: {'image': uint8 [B, H, W, C], 'label': int [B], 'example_id': int [B]}, and
      'box' int32 [B, 7] when the images are canvases to resize (data/box_resize.py).

  Returns:
    (new state, metrics) with metrics {'loss', 'accuracy', 'finite'} averaged over all
    devices; 'finite' is 1.0 when loss, gradients and the updated state were finite.
  """
  step_key = state.step_key()
  pixels = batch['image']
  if 'box' in batch:  # Streamed Inception crops, sent as boxes on canvases (box_resize).
    pixels = box_resize.resize_boxes(pixels, batch['box'], settings.image_size)
  images = network_input(pixels, settings)
  images = augment_lib.augment(jax.random.fold_in(step_key, 0), images, batch['example_id'],
                               crop_padding=settings.crop_padding, flip=settings.flip)
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
  # parameters. Leaving out its 2 x 161 arrays made ResNet-50's step compile faster
  # (BENCHMARKS.md).
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
  `tree` itself: XLA:CPU would still run an all-reduce that copies every leaf (10 ms of
  ResNet-50's 64x64 step on CPU, all of its gradients)."""
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
  images = network_input(batch['image'], settings)
  logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats}, images,
                       train=False)
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
  """The pmapped programs of a run (each compiled on first use).

  Names say what a program runs and where its data come from: `train_*` take and return
  the state (donated) with the metric sums of the steps run (see `add_step_metrics`);
  `eval_*` return evaluation sums (see `eval_step`). `*_on_device` programs loop with
  `lax.fori_loop` inside the program; `*_resident` programs gather their batch by index
  from splits replicated on the devices; `*_fed` programs take a batch the host sent.
  Which to run is the feed's business (resnet_jax.train.feeds).

  Attributes:
    train_steps_on_device: (state, resident_train, device_index, num_steps) ->
      (state, sums); num_steps steps in one dispatch. The trip count is an argument, not
      a shape, so one compiled program serves every chunk length, and a chunk never
      crosses an epoch (the loop's chunks end at epoch ends), so one permutation serves it.
    train_step_resident: (state, resident_train, device_index) -> (state, sums); one step.
    train_step_fed: (state, batch) -> (state, sums); one step on a host-fed batch.
    eval_on_device: (state, resident_eval, device_index) -> sums over every batch.
    eval_batch_resident: (state, resident_eval, device_index, batch_index) -> sums.
    eval_batch_fed: (state, batch) -> sums of one host-fed batch.
  """
  train_steps_on_device: Callable
  train_step_resident: Callable
  train_step_fed: Callable
  eval_on_device: Callable
  eval_batch_resident: Callable
  eval_batch_fed: Callable


def default_loop_on_device() -> bool:
  """Loop on the device except on CPU: XLA:CPU runs convolutions inside loops many times
  slower than outside (jax-ml/jax#12868)."""
  return jax.default_backend() != 'cpu'


def make_step_functions(model: nn.Module, tx: optax.GradientTransformation,
                        settings: StepSettings, shape: RunShape, data_key: jax.Array,
                        devices=None) -> StepFunctions:
  """Builds the pmapped train/eval programs for one run's shapes and settings.

  Args:
    shape: the run's batch layouts, steps per epoch and number of evaluation batches.
    data_key: the key the epochs' permutations derive from (see pipeline).
    devices: the local devices to pmap over (default: all devices).
  """
  per_epoch = shape.steps_per_epoch
  step = lambda state, batch: train_step(state, batch, model=model, tx=tx, settings=settings)
  evaluate = lambda state, batch: eval_step(state, batch, model=model, settings=settings)
  data_key_data = jax.random.key_data(data_key)

  def permutation_of(state, resident):
    return pipeline.epoch_permutation(jax.random.wrap_key_data(data_key_data),
                                      state.step // per_epoch, resident['label'].shape[0])

  def resident_step(state, resident, device_index, permutation, sums):
    batch = pipeline.gather_train_batch(resident['image'], resident['label'], permutation,
                                        state.step % per_epoch, device_index,
                                        shape.train.per_device_batch, shape.train.global_batch)
    new_state, metrics = step(state, batch)
    return new_state, add_step_metrics(sums, metrics, state.step)

  def train_steps_on_device(state, resident, device_index, num_steps):
    permutation = permutation_of(state, resident)
    body = lambda _, carry: resident_step(carry[0], resident, device_index, permutation,
                                          carry[1])
    return jax.lax.fori_loop(0, num_steps, body, (state, empty_train_sums()))

  def train_step_resident(state, resident, device_index):
    return resident_step(state, resident, device_index, permutation_of(state, resident),
                         empty_train_sums())

  def train_step_fed(state, batch):
    new_state, metrics = step(state, batch)
    return new_state, add_step_metrics(empty_train_sums(), metrics, state.step)

  def eval_batch_resident(state, padded, device_index, batch_index):
    batch = pipeline.gather_eval_batch(padded, batch_index, device_index,
                                       shape.eval.per_device_batch, shape.eval.global_batch)
    return evaluate(state, batch)

  def eval_on_device(state, padded, device_index):
    def body(index, sums):
      return jax.tree.map(jnp.add, sums, eval_batch_resident(state, padded, device_index, index))
    zeros = {k: jnp.zeros((), jnp.float32) for k in eval_sum_names(settings.num_classes)}
    return jax.lax.fori_loop(0, shape.num_eval_batches, body, zeros)

  pmap = lambda f, **kw: jax.pmap(f, axis_name=AXIS, devices=devices, **kw)
  return StepFunctions(
      train_steps_on_device=pmap(train_steps_on_device, donate_argnums=(0,)),
      train_step_resident=pmap(train_step_resident, donate_argnums=(0,)),
      train_step_fed=pmap(train_step_fed, donate_argnums=(0,)),
      eval_on_device=pmap(eval_on_device),
      eval_batch_resident=pmap(eval_batch_resident),
      eval_batch_fed=pmap(evaluate),
  )
