"""The training configuration: every field with its default, and a validator naming the bad field.

Fields are grouped by what they are for, and each part of the library reads its own group:
`model` (the network), `finetune` (pretrained weights), `data` (the dataset, its input
size and preprocessing, `data.augment`), `optim` (the optimizer and its schedule), `train`
(what a run trains: batch, length, seed, loss), `run` (bookkeeping: logs, checkpoints,
evaluation batch) and `speed` (how fast, never what a run computes). Config files in
experiments/configs/ start from `base_config()` and change what their experiment needs,
so every run has every field and a misspelled override is rejected by ml_collections (the
ConfigDict is locked). Fields are named by their dotted path: config.optim.learning_rate.
"""
import math
import numbers
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from resnet_jax.errors import ConfigError

GROUPS = ('model', 'finetune', 'data', 'optim', 'train', 'run', 'speed')
OPTIMIZERS = ('adam', 'sgd')
SCHEDULES = ('constant', 'warmup_cosine', 'piecewise')
DTYPES = ('float32', 'bfloat16')
NAN_POLICIES = ('raise', 'skip')
CONV_IMPLS = ('auto', 'xla', 'matmul')  # resnet_jax.models.conv.CONV_IMPLS
PREPROCESS_MODES = ('scale', 'standardize', 'caffe')
CROP_RESIZES = ('auto', 'device', 'host')  # config.speed.crop_resize
# Fields that define the network and its input: a workdir trained with one value cannot be
# continued with another, and predict.py rebuilds the model from them.
MODEL_FIELDS = ('model.name', 'model.layout', 'model.num_classes', 'model.block_design',
                'model.shortcut', 'data.name', 'data.image_size', 'data.preprocess')
# Fields (a group: every field in it) that cannot change what a run computes: a resumed run
# may change them freely. Every other field (a new one too, unless its group is listed) must
# keep its saved value on resume unless run.allow_changes_on_resume is set (see
# train/config_changes.py). Conditions: train.num_steps/num_epochs are guarded under the
# warmup_cosine schedule (it decays over the total), train.eval_every_epochs when
# train.bn_recompute_batches > 0 (each evaluation then changes the BatchNorm statistics the
# run carries on with).
FREE_ON_RESUME = ('run', 'speed', 'data.cache_dir', 'train.num_steps', 'train.num_epochs',
                  'train.eval_every_epochs')


def base_config() -> ml_collections.ConfigDict:
  """Every field with its default (the course's settings where it has one)."""
  config = ml_collections.ConfigDict()

  # model: the network (resnet_jax.models), as setup.build_model creates it.
  model = config.model = ml_collections.ConfigDict()
  model.name = 'resnet50'  # A name of resnet_jax.models.registry.
  model.layout = 'coursera'
  model.num_classes = 6
  model.dtype = 'float32'  # Compute precision; parameters stay float32.
  model.sync_bn = False  # True: BatchNorm statistics over the global batch (bn_axis_name).
  # Start each residual block's last BatchNorm scale at zero, so that every block begins as
  # the identity (Goyal et al. 2017): an initialisation, not a change to the architecture.
  model.zero_init_last_bn = False
  # Block design and shortcut option (resnet_jax/models/designs.py): '' keeps the model's
  # own ('original' and its shortcut for resnet<d>, 'full_preact' for the pre-activation
  # nets); e.g. block_design='bn_after_add' or shortcut='projection_all' (option C).
  model.block_design = ''
  model.shortcut = ''

  # finetune: starting from pretrained weights (resnet_jax.weights.initial_variables).
  finetune = config.finetune = ml_collections.ConfigDict()
  # A Keras .h5 file or a directory of saved variables; None: a fresh initialisation.
  finetune.init_from = config_dict.placeholder(str)
  finetune.freeze_backbone = False  # Train only the classifier `head` (backbone BN frozen).

  # data: the dataset, the size and preprocessing of its images, and their augmentation.
  data = config.data = ml_collections.ConfigDict()
  data.name = 'signs'  # resnet_jax.data.DATASET_NAMES; 'images': prepared shards or a folder.
  # None: SIGNS looks in data/signs and falls back to the synthetic set; a path given here
  # must hold the files.
  data.data_dir = config_dict.placeholder(str)
  # Where generated data (the synthetic SIGNS set) are kept; None: ~/.cache/resnet_jax.
  data.cache_dir = config_dict.placeholder(str)
  data.image_size = 64
  # 'scale' (/255), 'standardize' (per-channel, train split) or 'caffe' (Keras ImageNet weights).
  data.preprocess = 'scale'
  # The host pipeline's training recipe (resnet_jax.data.augment), evaluated on the view that
  # matches it: resize to image_size, pad by crop_padding and crop back, flip; or with
  # inception_crop, Inception's random-resized crop (8-100% of the area, aspect 3/4-4/3)
  # instead of the resize and pad-and-crop (speed.crop_resize says where it is resized).
  data.augment = ml_collections.ConfigDict({'crop_padding': 0, 'flip': False,
                                            'inception_crop': False})

  # optim: the optimizer and its learning-rate schedule (resnet_jax.train.optim).
  optim = config.optim = ml_collections.ConfigDict()
  optim.name = 'adam'
  optim.learning_rate = 1e-3
  optim.momentum = 0.9  # sgd only.
  optim.nesterov = False  # sgd only.
  optim.adam_b1 = 0.9
  optim.adam_b2 = 0.999
  optim.adam_eps = 1e-7  # Keras's default, not optax's 1e-8.
  optim.weight_decay = 0.0  # On kernels only: coupled L2 for sgd, decoupled for adam.
  optim.schedule = 'constant'
  optim.warmup_epochs = 0.0
  optim.lr_boundaries = ()  # piecewise: steps at which the rate is multiplied by lr_decay.
  optim.lr_decay = 0.1
  optim.grad_clip_norm = config_dict.placeholder(float)  # None: no clipping.

  # train: what a run trains on and for how long, and its loss.
  train = config.train = ml_collections.ConfigDict()
  train.batch_size = 32  # Global, over all devices and processes.
  train.num_epochs = 10
  train.num_steps = config_dict.placeholder(int)  # Overrides num_epochs when set.
  train.seed = 0
  train.label_smoothing = 0.0
  train.nan_policy = 'raise'  # 'raise' stops the run; 'skip' drops non-finite updates.
  # Before each evaluation, re-estimate BatchNorm's running statistics over this many
  # training batches with the current weights (see train/bn_recompute.py); 0: keep the
  # running averages, as Keras does.
  train.bn_recompute_batches = 0
  train.eval_every_epochs = 1

  # run: bookkeeping of a run (logs, checkpoints, display), free to change on resume.
  run = config.run = ml_collections.ConfigDict()
  run.eval_batch_size = config_dict.placeholder(int)  # None: train.batch_size.
  run.log_every_steps = 10
  run.checkpoint_every_steps = 1000
  run.keep_checkpoints = 2  # The last K, plus the best by eval accuracy.
  run.progress_bar = True
  run.tensorboard = True
  # (first, last): a jax.profiler trace of steps first..last-1 in <workdir>/profile, for
  # TensorBoard's profile plugin or Perfetto (resnet_jax/train/profiling.py); () traces nothing.
  run.profile_steps = ()
  # Resuming with a changed field that changes what the run computes (learning rate,
  # optimizer, data, seed, ...; every field not in FREE_ON_RESUME), or on data whose class
  # names or identity differ from those config.json records, is refused; True continues
  # with the new values and records the change, with the step it took effect at and the
  # whole previous config, in <workdir>/config_changes.jsonl.
  run.allow_changes_on_resume = False

  # speed: how fast a run goes. These fields never change what a run computes (results
  # agree to float rounding whatever their values), so a resumed run may change them.
  speed = config.speed = ml_collections.ConfigDict()
  # How convolutions compute (never what they compute, nor their parameters): 'auto' takes
  # matmul formulations on CPU for the shapes where XLA:CPU's convolution is slow and XLA's
  # convolution elsewhere; 'xla' or 'matmul' force one (see resnet_jax/models/conv.py).
  speed.conv_impl = 'auto'
  # Processes decoding and augmenting the input pipeline's batches; 0: the training process
  # itself.
  speed.data_workers = 0
  speed.steps_per_dispatch = 8  # Steps per host dispatch, as one train_chunk program.
  # Run those steps as one dispatch (a lax.scan over their batches); None: yes, except on
  # CPU, where XLA runs convolutions inside loops far slower (each step is then its own
  # dispatch).
  speed.loop_on_device = config_dict.placeholder(bool)
  # Where the Inception crop's box is resized to data.image_size: 'device' (in the train
  # step; the host only decodes and copies the box), 'host' (Pillow, in the decoding
  # processes) or 'auto' (the device, except on CPU backends, where both are the same
  # cores). Both resize as Pillow does (box_resize: within 2 grey levels).
  speed.crop_resize = 'auto'
  config.lock()
  return config


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  """A finite real number (not a bool): inf and nan are refused wherever a number is read."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def get_field(config, field: str):
  """The value of a dotted field ('optim.learning_rate'); ConfigError if it is missing."""
  node = config
  for part in field.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      raise ConfigError(f'config.{field} is missing; start config files from '
                        f'resnet_jax.train.config.base_config()')
    node = node[part]
  return node


def _check(config, field: str, ok: Callable[[Any], bool], expected: str) -> None:
  value = get_field(config, field)
  if not ok(value):
    raise ConfigError(f'config.{field}={value!r}: expected {expected}')


def _one_of(names) -> Callable[[Any], bool]:
  return lambda value: value in names


def validate_config(config: ml_collections.ConfigDict, *, check_model: bool = True,
                    check_dataset: bool = True) -> None:
  """Checks every field (type, range, known names); ConfigError naming the first bad one.

  Args:
    config: the run's configuration.
    check_model: check model.name, layout, block_design and shortcut against the model zoo
      (off when a caller passes its own module). model.zero_init_last_bn is checked against
      the model that model.name names either way, when it names one.
    check_dataset: check data.name against the known loaders (off when a caller passes
      its own data).
  """
  boolean = (lambda v: isinstance(v, bool), 'True or False')
  positive_int = (lambda v: _is_int(v) and v >= 1, 'a positive integer')
  path_or_none = (lambda v: v is None or (isinstance(v, str) and v), 'None or a directory path')
  checks = [
      ('model.num_classes', lambda v: _is_int(v) and v >= 2, 'an integer >= 2'),
      ('model.dtype', _one_of(DTYPES), f'one of {DTYPES}'),
      ('model.sync_bn', *boolean),
      ('model.zero_init_last_bn', *boolean),
      ('finetune.init_from', lambda v: v is None or (isinstance(v, str) and v),
       'None or a checkpoint/weights path'),
      ('finetune.freeze_backbone', *boolean),
      ('data.data_dir', *path_or_none),
      ('data.cache_dir', *path_or_none),
      ('data.image_size', lambda v: _is_int(v) and v >= 1, 'a positive integer (pixels)'),
      ('data.preprocess', _one_of(PREPROCESS_MODES), f'one of {PREPROCESS_MODES}'),
      ('data.augment.crop_padding', lambda v: _is_int(v) and v >= 0,
       'an integer >= 0 (pixels)'),
      ('data.augment.flip', *boolean),
      ('data.augment.inception_crop', *boolean),
      ('optim.name', _one_of(OPTIMIZERS), f'one of {OPTIMIZERS}'),
      ('optim.learning_rate', lambda v: _is_number(v) and v > 0, 'a finite positive number'),
      ('optim.momentum', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('optim.nesterov', *boolean),
      ('optim.adam_b1', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('optim.adam_b2', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('optim.adam_eps', lambda v: _is_number(v) and v > 0, 'a finite positive number'),
      ('optim.weight_decay', lambda v: _is_number(v) and v >= 0, 'a finite number >= 0'),
      ('optim.schedule', _one_of(SCHEDULES), f'one of {SCHEDULES}'),
      ('optim.warmup_epochs', lambda v: _is_number(v) and v >= 0, 'a finite number >= 0'),
      ('optim.lr_boundaries', lambda v: isinstance(v, (tuple, list)) and all(
          _is_int(b) and b > 0 for b in v) and list(v) == sorted(v),
       'increasing positive step numbers, e.g. (32000, 48000)'),
      ('optim.lr_decay', lambda v: _is_number(v) and 0 < v <= 1, 'a number in (0, 1]'),
      ('optim.grad_clip_norm', lambda v: v is None or (_is_number(v) and v > 0),
       'None or a finite positive number'),
      ('train.batch_size', *positive_int),
      ('train.num_epochs', lambda v: _is_number(v) and v > 0,
       'a finite positive number of epochs'),
      ('train.num_steps', lambda v: v is None or positive_int[0](v),
       'None or a positive integer'),
      ('train.seed', lambda v: _is_int(v) and 0 <= v < 2**31, 'an integer in [0, 2**31)'),
      ('train.label_smoothing', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('train.nan_policy', _one_of(NAN_POLICIES), f'one of {NAN_POLICIES}'),
      ('train.bn_recompute_batches', lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
      ('train.eval_every_epochs', *positive_int),
      ('run.eval_batch_size', lambda v: v is None or positive_int[0](v),
       'None or a positive integer'),
      ('run.log_every_steps', *positive_int),
      ('run.checkpoint_every_steps', *positive_int),
      ('run.keep_checkpoints', *positive_int),
      ('run.progress_bar', *boolean),
      ('run.tensorboard', *boolean),
      ('run.allow_changes_on_resume', *boolean),
      ('run.profile_steps', lambda v: isinstance(v, (tuple, list)) and (
          len(v) == 0 or (len(v) == 2 and all(_is_int(x) for x in v) and 0 <= v[0] < v[1])),
       '() or (first, last): integers with 0 <= first < last'),
      ('speed.conv_impl', _one_of(CONV_IMPLS), f'one of {CONV_IMPLS}'),
      ('speed.data_workers', lambda v: _is_int(v) and v >= 0, 'an integer >= 0 (processes)'),
      ('speed.steps_per_dispatch', *positive_int),
      ('speed.loop_on_device', lambda v: v is None or isinstance(v, bool),
       'None, True or False'),
      ('speed.crop_resize', _one_of(CROP_RESIZES), f'one of {CROP_RESIZES}'),
  ]
  from resnet_jax import models  # Imported here: config files need not load the zoo.
  if check_model:
    checks[:0] = [
        ('model.name', models.is_model_name,
         f'one of {tuple(models.MODEL_NAMES)} or {models.NAME_GRAMMAR}'),
        ('model.layout', _one_of(models.LAYOUT_NAMES), f'one of {tuple(models.LAYOUT_NAMES)}'),
        ('model.block_design', _one_of(('',) + models.DESIGN_NAMES),
         f"'' (the model's own) or one of {models.DESIGN_NAMES}"),
        ('model.shortcut', _one_of(('',) + models.SHORTCUTS),
         f"'' (the model's own) or one of {models.SHORTCUTS}"),
    ]
  if check_dataset:
    from resnet_jax import data
    names = tuple(data.DATASET_NAMES)
    checks.insert(0, ('data.name', _one_of(names), f'one of {names}'))
  for field, ok, expected in checks:
    _check(config, field, ok, expected)
  if config.optim.schedule == 'piecewise' and not config.optim.lr_boundaries:
    raise ConfigError("config.optim.lr_boundaries=(): optim.schedule 'piecewise' expects at "
                      'least one boundary step')
  # Also when the caller passes its own module (check_model=False): a sweep passes the
  # module it built from model.name, and a plain one must not be zero-initialised either.
  name = config.model.name
  if config.model.zero_init_last_bn and models.is_model_name(name):
    if not models.parse_model_name(name).residual:
      raise ConfigError(f'config.model.zero_init_last_bn=True with config.model.name={name!r}: '
                        'a plain net has no skip to carry the signal past a zeroed block; '
                        'expected a residual model or zero_init_last_bn=False')
  if config.finetune.freeze_backbone and not config.finetune.init_from:
    raise ConfigError('config.finetune.freeze_backbone=True with config.finetune.init_from=None: '
                      'expected init_from to name the pretrained weights to freeze')


def model_fields(config: ml_collections.ConfigDict) -> dict:
  """{dotted field: value} of the fields that define the network and its input
  (MODEL_FIELDS); None for a field the config lacks."""
  found = {}
  for field in MODEL_FIELDS:
    try:
      found[field] = get_field(config, field)
    except ConfigError:
      found[field] = None
  return found


def is_free_on_resume(field: str) -> bool:
  """Whether FREE_ON_RESUME lists the dotted `field` or a group holding it (without the
  conditions that train/config_changes.py adds)."""
  return any(field == free or field.startswith(free + '.') for free in FREE_ON_RESUME)


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
  """run.eval_batch_size, or train.batch_size when it is None."""
  return config.run.eval_batch_size or config.train.batch_size


def total_steps(train: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """Training steps of the run (from the `train` group): num_steps if set, else num_epochs
  whole or partial epochs."""
  if train.num_steps:
    return int(train.num_steps)
  return max(1, int(round(train.num_epochs * steps_per_epoch)))


def warmup_steps(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """optim.warmup_epochs in steps."""
  return int(round(optim.warmup_epochs * steps_per_epoch))


def check_grouped(values: dict, source: str) -> None:
  """ConfigError unless `values` (a saved config, as a dict) has the grouped layout of
  base_config: every top-level entry a group. A config of the earlier flat layout (every
  field at the top, e.g. 'learning_rate') is named as such, not as a list of changes."""
  flat = [key for key, value in values.items() if not isinstance(value, dict)]
  if flat:
    shown = ', '.join(sorted(flat)[:4]) + (', ...' if len(flat) > 4 else '')
    raise ConfigError(
        f'{source} was written by the earlier flat config layout (top-level fields {shown}); '
        f'this version groups the fields ({", ".join(GROUPS)}, e.g. config.optim.'
        'learning_rate) and cannot continue or read that run: start a new --workdir')
