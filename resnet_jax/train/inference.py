"""A trained model back from its workdir, for class probabilities of new images."""
import dataclasses
import logging
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from resnet_jax.errors import CheckpointError, DatasetError
from resnet_jax.train import (
  checkpoint as checkpoint_lib,
  config_changes,
  setup,
  workdir as workdir_lib,
)
from resnet_jax.train.preprocess import preprocess

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Predictor:
  """A model with the variables of one checkpoint and the preprocessing it was trained with."""
  model: nn.Module
  variables: dict
  config: object  # The run's saved config (workdir.load_saved_config).
  class_names: tuple
  step: int
  checkpoint: str
  mean: Optional[list] = None
  std: Optional[list] = None

  def __post_init__(self):
    self._logits = jax.jit(
        lambda variables, images: self.model.apply(variables, images, train=False))

  def check_fits(self, image_shape: tuple, num_classes: Optional[int], source: str) -> None:
    """DatasetError naming `source` and the model unless images of `image_shape` ([H, W, C])
    and labels among `num_classes` classes (None: unlabelled) are what the model takes."""
    size = self.config.data.image_size
    model = f'the model of {self.checkpoint} ({self.config.model.name})'
    if tuple(image_shape) != (size, size, 3):
      raise DatasetError(f'{source} holds images of shape {tuple(image_shape)} (H, W, C) but '
                         f'{model} takes {(size, size, 3)}; expected data of the run\'s image '
                         'size, RGB')
    if num_classes is not None and num_classes != len(self.class_names):
      raise DatasetError(f'{source} has {num_classes} classes but {model} predicts '
                         f'{len(self.class_names)} {list(self.class_names)[:10]}; expected '
                         'data of the classes the run was trained on')

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] at the config's image size -> float32 [N, num_classes]."""
    x = preprocess(jnp.asarray(images), self.config.data.preprocess, self.mean, self.std)
    logits = self._logits(self.variables, x).astype(jnp.float32)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def load_predictor(workdir: str, which: str = 'best') -> Predictor:
  """The model of a training workdir with its best (by eval accuracy) or latest checkpoint.

  Reads config.json for the model and checkpoints read-only: safe while a run is writing.
  Falls back to older checkpoints if the chosen one cannot be read, with one warning per
  checkpoint passed over naming the step used instead. CheckpointError if the checkpoint
  read names other classes than the run's (`check_classes`).
  """
  config = workdir_lib.load_saved_config(workdir)
  model = setup.build_model(config)
  size = config.data.image_size
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                               train=False))
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=1, read_only=True)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise CheckpointError(f'workdir {workdir!r} holds no checkpoint in '
                            f'{checkpointer.directory}; expected a finished or running training')
    first = checkpointer.best_step() if which == 'best' else checkpointer.latest_step()
    order = [first] + [s for s in reversed(steps) if s != first]
    unreadable = []  # (path, error) of each damaged checkpoint passed over.
    for step in order:
      try:
        with checkpoint_lib.quiet_library():
          state, meta = checkpointer.read(step)
      except Exception as error:  # A damaged checkpoint: try the next, say so once it is known.
        checkpoint_lib.silence_late_read_errors()
        unreadable.append((checkpointer.path(step), error))
        continue
      for path, error in unreadable:
        log.warning('checkpoint %s cannot be read (%s: %s); using step %d (%s) instead', path,
                    type(error).__name__, str(error).splitlines()[0][:200] if str(error) else '',
                    step, checkpointer.path(step))
      template = {'params': abstract['params'], 'batch_stats': abstract.get('batch_stats', {})}
      found = {'params': state['params'], 'batch_stats': state.get('batch_stats', {})}
      checkpoint_lib.check_fits(found, template, checkpointer.path(step))
      class_names = tuple(meta.get('class_names') or range(config.model.num_classes))
      check_classes(workdir, checkpointer, step, meta.get('class_names'))
      return Predictor(model=model, variables=found, config=config,
                       class_names=tuple(str(c) for c in class_names), step=step,
                       checkpoint=checkpointer.path(step), mean=meta.get('preprocess_mean'),
                       std=meta.get('preprocess_std'))
    raise CheckpointError(f'no checkpoint in {checkpointer.directory} can be read')
  finally:
    checkpointer.close()


def check_classes(workdir: str, checkpointer, step: int, names: Optional[list]) -> None:
  """CheckpointError, naming the classes old and new, unless the checkpoint at `step`, whose
  metadata names the classes `names` (None: it names none, nothing to compare), predicts
  the classes of its run.

  Those are the classes config.json records (the run's data of now): a checkpoint from
  before the run went on with other classes (allowed on resume) is refused rather than
  predicting by another list than the run's. For a run saved before config.json recorded
  its data, no earlier checkpoint may name other classes: a resume on changed classes then
  trained the later checkpoints under two labellings at once.
  """
  if names is None:
    return
  names, path = [str(name) for name in names], checkpointer.path(step)
  record = workdir_lib.load_data_record(workdir)
  if record is not None:
    if names == record['class_names']:
      return
    lists = workdir_lib.checkpoint_class_names(checkpointer)
    matching = [s for s, found in sorted(lists.items()) if found == record['class_names']]
    have = ('step {} has' if len(matching) == 1 else 'steps {} have').format(
        ', '.join(map(str, matching)))
    hint = (f'{have} them (--checkpoint=latest)' if matching
            else 'no checkpoint has them yet: resume the run until it saves one')
    changes = config_changes.class_changes(names, record['class_names'],
                                           ('in the checkpoint', 'in config.json'))
    raise CheckpointError(
        f'checkpoint {path} (step {step}) predicts other classes than the run trains on '
        f'({changes}): the run went on with other data after it (see '
        f'{config_changes.CHANGES_NAME}); expected a checkpoint of the run\'s classes: {hint}')
  before = None  # (step, class names) of the last earlier checkpoint that names them.
  for earlier, found in sorted(workdir_lib.checkpoint_class_names(checkpointer).items()):
    if earlier > step or found is None:
      continue
    if before is not None and found != before[1]:
      changes = config_changes.class_changes(before[1], found, (f'at step {before[0]}',
                                                                f'at step {earlier}'))
      raise CheckpointError(
          f'checkpoint {path} (step {step}) was trained across a change of the class list '
          f'({changes}): the run was resumed on other data, so its weights mix both '
          f'labellings; expected a checkpoint from before the change (step {before[0]} or '
          'earlier), or a new run in a new --workdir')
    before = (earlier, found)
