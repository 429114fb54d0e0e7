"""The training configuration: every field with its default, and a validator naming the bad field.

Config files in experiments/configs/ start from `base_config()` and change what their
experiment needs, so every run has every field and a misspelled override is rejected by
ml_collections (the ConfigDict is locked).
"""
import numbers
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from resnet_jax.errors import ConfigError

OPTIMIZERS = ('adam', 'sgd')
SCHEDULES = ('constant', 'warmup_cosine', 'piecewise')
DTYPES = ('float32', 'bfloat16')
NAN_POLICIES = ('raise', 'skip')
CONV_IMPLS = ('auto', 'xla', 'matmul')  # resnet_jax.models.conv.CONV_IMPLS
PREPROCESS_MODES = ('scale', 'standardize', 'caffe')
CROP_RESIZES = ('auto', 'device', 'host')  # config.augment.crop_resize
# Fields that define the network and its input: a workdir trained with one value cannot be
# continued with another, and predict.py rebuilds the model from them.
MODEL_FIELDS = ('model', 'layout', 'num_classes', 'image_size', 'dataset', 'preprocess',
                'block_design', 'shortcut')
# Fields that cannot change what a run computes: a resumed run may change them freely. Every
# other field (a new one too, until it is listed here) must keep its saved value on resume
# unless allow_changes_on_resume is set (see train/config_changes.py). Conditions:
# num_steps/num_epochs are guarded under the warmup_cosine schedule (it decays over the
# total), eval_every_epochs when bn_recompute_batches > 0 (each evaluation then changes
# the BatchNorm statistics the run carries on with).
FREE_ON_RESUME = ('log_every_steps', 'eval_every_epochs', 'checkpoint_every_steps',
                  'keep_checkpoints', 'progress_bar', 'tensorboard', 'num_steps', 'num_epochs',
                  'steps_per_dispatch', 'loop_on_device', 'data_on_device', 'eval_batch_size',
                  'cache_dir', 'allow_changes_on_resume', 'data_workers',
                  # Host and device resize as Pillow does (box_resize: within 2 grey levels).
                  'augment.crop_resize')


def base_config() -> ml_collections.ConfigDict:
  """Every field with its default (the course's settings where it has one)."""
  config = ml_collections.ConfigDict()
  # Model.
  config.model = 'resnet50'
  config.layout = 'coursera'
  config.num_classes = 6
  config.dtype = 'float32'  # Compute precision; parameters stay float32.
  config.sync_bn = False  # True: BatchNorm statistics over the global batch (bn_axis_name).
  # Start each residual block's last BatchNorm scale at zero, so that every block begins as
  # the identity (Goyal et al. 2017): an initialisation, not a change to the architecture.
  config.zero_init_last_bn = False
  # Block design and shortcut option (resnet_jax/models/designs.py): '' keeps the model's
  # own ('original' and its shortcut for resnet<d>, 'full_preact' for the pre-activation
  # nets); e.g. block_design='bn_after_add' or shortcut='projection_all' (option C).
  config.block_design = ''
  config.shortcut = ''
  # How convolutions compute (never what they compute, nor their parameters): 'auto' takes
  # matmul formulations on CPU for the shapes where XLA:CPU's convolution is slow and XLA's
  # convolution elsewhere; 'xla' or 'matmul' force one (see resnet_jax/models/conv.py).
  config.conv_impl = 'auto'
  # Data.
  config.dataset = 'signs'
  # None: SIGNS looks in data/signs and falls back to the synthetic set; a path given here
  # must hold the files.
  config.data_dir = config_dict.placeholder(str)
  # Where generated data (the synthetic SIGNS set) are kept; None: ~/.cache/resnet_jax.
  config.cache_dir = config_dict.placeholder(str)
  config.image_size = 64
  # 'scale' (/255), 'standardize' (per-channel, train split) or 'caffe' (Keras ImageNet weights).
  config.preprocess = 'scale'
  # inception_crop: Inception's random-resized crop (8-100% of the area, aspect 3/4-4/3)
  # instead of pad-and-crop; streamed data (dataset 'images') only, where the host augments.
  # crop_resize: where the Inception crop's box is resized to image_size: 'device' (in the
  # train step; the host only decodes and copies the box), 'host' (Pillow, in the decoding
  # processes) or 'auto' (the device, except on CPU backends, where both are the same cores).
  config.augment = ml_collections.ConfigDict({'crop_padding': 0, 'flip': False,
                                              'inception_crop': False, 'crop_resize': 'auto'})
  # Processes decoding and augmenting streamed data (dataset 'images'); 0: the training
  # process itself.
  config.data_workers = 0
  # Before each evaluation, re-estimate BatchNorm's running statistics over this many
  # training batches with the current weights (see train/bn_recompute.py); 0: keep the
  # running averages, as Keras does.
  config.bn_recompute_batches = 0
  config.data_on_device = True  # Keep the splits on the devices when they fit.
  # Optimisation.
  config.batch_size = 32  # Global, over all devices and processes.
  config.eval_batch_size = config_dict.placeholder(int)  # None: batch_size.
  config.num_epochs = 10
  config.num_steps = config_dict.placeholder(int)  # Overrides num_epochs when set.
  config.optimizer = 'adam'
  config.learning_rate = 1e-3
  config.momentum = 0.9  # sgd only.
  config.nesterov = False  # sgd only.
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-7  # Keras's default, not optax's 1e-8.
  config.weight_decay = 0.0  # On kernels only: coupled L2 for sgd, decoupled for adam.
  config.schedule = 'constant'
  config.warmup_epochs = 0.0
  config.lr_boundaries = ()  # piecewise: steps at which the rate is multiplied by lr_decay.
  config.lr_decay = 0.1
  config.label_smoothing = 0.0
  config.grad_clip_norm = config_dict.placeholder(float)  # None: no clipping.
  config.nan_policy = 'raise'  # 'raise' stops the run; 'skip' drops non-finite updates.
  config.seed = 0
  # Loop.
  config.steps_per_dispatch = 8  # Steps run on the device per host dispatch (lax loop).
  # Run those steps in a lax loop on the device; None: yes, except on CPU, where XLA runs
  # convolutions inside loops far slower (each step is then its own dispatch).
  config.loop_on_device = config_dict.placeholder(bool)
  config.log_every_steps = 10
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 2  # The last K, plus the best by eval accuracy.
  config.progress_bar = True
  config.tensorboard = True
  # Fine-tuning (filled in by fine-tuning configs).
  config.init_from = config_dict.placeholder(str)
  config.freeze_backbone = False
  # Resuming with a changed field that changes what the run computes (learning rate,
  # optimizer, data, seed, ...; every field not in FREE_ON_RESUME) is refused; True
  # continues with the new values and records the change, with the step it took effect
  # at and the whole previous config, in <workdir>/config_changes.jsonl.
  config.allow_changes_on_resume = False
  config.lock()
  return config


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check(config, field: str, ok: Callable[[Any], bool], expected: str) -> None:
  value = _get(config, field)
  if not ok(value):
    raise ConfigError(f'config.{field}={value!r}: expected {expected}')


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    if part not in node:
      raise ConfigError(f'config.{field} is missing; start config files from '
                        f'resnet_jax.train.config.base_config()')
    node = node[part]
  return node


def _one_of(names) -> Callable[[Any], bool]:
  return lambda value: value in names


def validate_config(config: ml_collections.ConfigDict, *, check_model: bool = True,
                    check_dataset: bool = True) -> None:
  """Checks every field (type, range, known names); ConfigError naming the first bad one.

  Args:
    config: the run's configuration.
    check_model: check `model` and `layout` against the model zoo (off when a caller
      passes its own module). zero_init_last_bn is checked against the model that
      `model` names either way, when it names one.
    check_dataset: check `dataset` against the known loaders (off when a caller passes
      its own data).
  """
  positive_int = (_is_int, lambda v: v >= 1)
  checks = [
      ('num_classes', lambda v: _is_int(v) and v >= 2, 'an integer >= 2'),
      ('dtype', _one_of(DTYPES), f'one of {DTYPES}'),
      ('sync_bn', lambda v: isinstance(v, bool), 'True or False'),
      ('zero_init_last_bn', lambda v: isinstance(v, bool), 'True or False'),
      ('conv_impl', _one_of(CONV_IMPLS), f'one of {CONV_IMPLS}'),
      ('data_dir', lambda v: v is None or (isinstance(v, str) and v), 'None or a directory path'),
      ('cache_dir', lambda v: v is None or (isinstance(v, str) and v), 'None or a directory path'),
      ('image_size', lambda v: _is_int(v) and v >= 1, 'a positive integer (pixels)'),
      ('preprocess', _one_of(PREPROCESS_MODES), f'one of {PREPROCESS_MODES}'),
      ('augment.crop_padding', lambda v: _is_int(v) and v >= 0, 'an integer >= 0 (pixels)'),
      ('augment.flip', lambda v: isinstance(v, bool), 'True or False'),
      ('augment.inception_crop', lambda v: isinstance(v, bool), 'True or False'),
      ('augment.crop_resize', _one_of(CROP_RESIZES), f'one of {CROP_RESIZES}'),
      ('data_workers', lambda v: _is_int(v) and v >= 0, 'an integer >= 0 (processes)'),
      ('bn_recompute_batches', lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
      ('data_on_device', lambda v: isinstance(v, bool), 'True or False'),
      ('batch_size', lambda v: all(c(v) for c in positive_int), 'a positive integer'),
      ('eval_batch_size', lambda v: v is None or all(c(v) for c in positive_int),
       'None or a positive integer'),
      ('num_epochs', lambda v: _is_number(v) and v > 0, 'a positive number of epochs'),
      ('num_steps', lambda v: v is None or all(c(v) for c in positive_int),
       'None or a positive integer'),
      ('optimizer', _one_of(OPTIMIZERS), f'one of {OPTIMIZERS}'),
      ('learning_rate', lambda v: _is_number(v) and v > 0, 'a positive number'),
      ('momentum', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('nesterov', lambda v: isinstance(v, bool), 'True or False'),
      ('adam_b1', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('adam_b2', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('adam_eps', lambda v: _is_number(v) and v > 0, 'a positive number'),
      ('weight_decay', lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
      ('schedule', _one_of(SCHEDULES), f'one of {SCHEDULES}'),
      ('warmup_epochs', lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
      ('lr_boundaries', lambda v: isinstance(v, (tuple, list)) and all(
          _is_int(b) and b > 0 for b in v) and list(v) == sorted(v),
       'increasing positive step numbers, e.g. (32000, 48000)'),
      ('lr_decay', lambda v: _is_number(v) and 0 < v <= 1, 'a number in (0, 1]'),
      ('label_smoothing', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
      ('grad_clip_norm', lambda v: v is None or (_is_number(v) and v > 0),
       'None or a positive number'),
      ('nan_policy', _one_of(NAN_POLICIES), f'one of {NAN_POLICIES}'),
      ('seed', lambda v: _is_int(v) and 0 <= v < 2**31, 'an integer in [0, 2**31)'),
      ('steps_per_dispatch', lambda v: all(c(v) for c in positive_int), 'a positive integer'),
      ('loop_on_device', lambda v: v is None or isinstance(v, bool), 'None, True or False'),
      ('log_every_steps', lambda v: all(c(v) for c in positive_int), 'a positive integer'),
      ('eval_every_epochs', lambda v: all(c(v) for c in positive_int), 'a positive integer'),
      ('checkpoint_every_steps', lambda v: all(c(v) for c in positive_int),
       'a positive integer'),
      ('keep_checkpoints', lambda v: all(c(v) for c in positive_int), 'a positive integer'),
      ('progress_bar', lambda v: isinstance(v, bool), 'True or False'),
      ('tensorboard', lambda v: isinstance(v, bool), 'True or False'),
      ('init_from', lambda v: v is None or (isinstance(v, str) and v),
       'None or a checkpoint/weights path'),
      ('freeze_backbone', lambda v: isinstance(v, bool), 'True or False'),
      ('allow_changes_on_resume', lambda v: isinstance(v, bool), 'True or False'),
  ]
  from resnet_jax import models  # Imported here: config files need not load the zoo.
  if check_model:
    checks[:0] = [
        ('model', models.is_model_name,
         f'one of {tuple(models.MODEL_NAMES)} or {models.NAME_GRAMMAR}'),
        ('layout', _one_of(models.LAYOUT_NAMES), f'one of {tuple(models.LAYOUT_NAMES)}'),
        ('block_design', _one_of(('',) + models.DESIGN_NAMES),
         f"'' (the model's own) or one of {models.DESIGN_NAMES}"),
        ('shortcut', _one_of(('',) + models.SHORTCUTS),
         f"'' (the model's own) or one of {models.SHORTCUTS}"),
    ]
  if check_dataset:
    from resnet_jax import data
    names = tuple(data.DATASET_NAMES) + tuple(data.STREAMED_DATASET_NAMES)
    checks.insert(0, ('dataset', _one_of(names), f'one of {names}'))
  for field, ok, expected in checks:
    _check(config, field, ok, expected)
  if config.schedule == 'piecewise' and not config.lr_boundaries:
    raise ConfigError("config.lr_boundaries=(): schedule 'piecewise' expects at least one "
                      'boundary step')
  # Also when the caller passes its own module (check_model=False): a sweep passes the
  # module it built from config.model, and a plain one must not be zero-initialised either.
  if config.zero_init_last_bn and models.is_model_name(config.model):
    if not models.parse_model_name(config.model).residual:
      raise ConfigError(f'config.zero_init_last_bn=True with config.model={config.model!r}: a '
                        'plain net has no skip to carry the signal past a zeroed block; '
                        'expected a residual model or zero_init_last_bn=False')
  _check_streamed(config)
  if config.freeze_backbone and not config.init_from:
    raise ConfigError('config.freeze_backbone=True with config.init_from=None: expected '
                      'init_from to name the pretrained weights to freeze')


def _check_streamed(config: ml_collections.ConfigDict) -> None:
  """Streamed data are never held whole: what needs the whole split is refused."""
  if config.dataset == 'images':
    if config.preprocess == 'standardize':
      raise ConfigError("config.preprocess='standardize' with config.dataset='images': the "
                        'channel statistics need the whole split in memory; expected '
                        "'scale' or 'caffe'")
    if config.bn_recompute_batches:
      raise ConfigError(f'config.bn_recompute_batches={config.bn_recompute_batches} with '
                        "config.dataset='images': expected 0 (re-estimation reads the "
                        'training split in memory)')
  elif config.augment.inception_crop:
    raise ConfigError(f'config.augment.inception_crop=True with config.dataset='
                      f"{config.dataset!r}: expected dataset 'images' (the crop is made on "
                      'the host, from the stored image)')


def model_fields(config: ml_collections.ConfigDict) -> dict:
  """The fields that define the network and its input (see MODEL_FIELDS)."""
  return {field: config.get(field) for field in MODEL_FIELDS}


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
  return config.eval_batch_size or config.batch_size


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """Training steps of the run: num_steps if set, else num_epochs whole or partial epochs."""
  if config.num_steps:
    return int(config.num_steps)
  return max(1, int(round(config.num_epochs * steps_per_epoch)))


def warmup_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  return int(round(config.warmup_epochs * steps_per_epoch))

