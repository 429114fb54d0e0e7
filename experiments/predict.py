"""Class probabilities for image files, from a training run's checkpoint.

  python experiments/predict.py --workdir runs/signs_resnet50 my_hand.jpg other.png

The course's "test with your own image": each image is decoded as training data are (EXIF
orientation, RGB), seen as the run's evaluation sees a picture (the whole picture resized to
the run's image size; runs with Inception crops: shorter side to size / 0.875, centre crop)
and preprocessed as in training; class names are those the run trained on. Prints one line per image
with the predicted class and the --top_k most probable classes (default: all of them for
fewer than 10 classes, else 5), most probable first. Uses the best checkpoint by the run's
evaluation accuracy, as evaluate.py does (--checkpoint=latest: the newest).

The probabilities are the model's softmax over the classes it trained on: they sum to 1
whatever the picture shows, so a picture of something else (a temple, a cat) still gets a
class, often with a high probability; they mean something only for pictures like the
training data. When the run trained on synthetic SIGNS (the default when data/signs holds
no real files), one line on stderr says so: photographs unlike the course's are outside what
it saw.

A checkpoint whose classes are not the run's is refused (one `error:` line naming each
class old and new): one saved before the run went on with other data
(--config.run.allow_changes_on_resume), or, in a workdir from before runs recorded their
data, one saved after a resume on other classes (its weights then mix two labellings).

The images are read before the checkpoint is loaded. An image that cannot be read (not an
image, truncated, larger than Pillow's decompression-bomb limit) gets its own `error:` line
on stderr and the others are still predicted; the exit code is then 2. Other bad input (a
workdir without a run) prints one `error:` line and exits with code 2 (--debug shows the
traceback).
"""
import json
import logging
import os
import sys

import numpy as np
from absl import app, flags

from experiments import cli, malloc_tuning

SCRIPT = cli.Script(__doc__)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/signs_resnet50', "A training run's workdir.",
                               flag_values=SCRIPT.flags)
_WHICH = flags.DEFINE_enum('checkpoint', cli.DEFAULT_CHECKPOINT, ['best', 'latest'],
                           'Which checkpoint: the best by eval accuracy or the newest.',
                           flag_values=SCRIPT.flags)
_TOP_K = flags.DEFINE_integer('top_k', None, 'Classes listed per image, most probable first '
                              '(default: all for fewer than 10 classes, else 5).',
                              lower_bound=1, flag_values=SCRIPT.flags)


def default_top_k(num_classes: int) -> int:
  """Every class of a small model; the five most probable of a large one (1000 would be
  16 KB per image)."""
  return num_classes if num_classes < 10 else 5


def read_image(path: str, size: int, augmentation=None) -> np.ndarray:
  """uint8 [size, size, 3] from an image file, as the run's evaluation sees a picture: decoded
  as training data are (EXIF orientation applied, any mode to RGB), then the evaluation view
  of the run's recipe (`augmentation`, resnet_jax.data.augment.Augmentation; default the
  small pictures' recipe: the whole picture resized to size x size; Inception-crop runs see
  the centre crop). DatasetError naming the file if it cannot be read.
  """
  from resnet_jax.data import image_files
  from resnet_jax.data.augment import Augmentation
  from resnet_jax.errors import BadImageError, DatasetError
  augmentation = augmentation or Augmentation()
  try:
    image = image_files.decode_rgb_image(path,
                                         min_shorter_side=augmentation.eval_decode_side(size))
  except BadImageError as error:
    raise DatasetError(f'{path!r} cannot be read as an image: {error.reason}; expected a '
                       'JPEG, PNG or another format Pillow reads, within its pixel limit'
                       ) from error
  return augmentation.eval_view(image, size)


SYNTHETIC_NOTE = ('note: this model was trained on rendered hands, {source}, drawn like the '
                  "course's photographs (one hand showing 0-5 fingers against a light wall); "
                  'other real photographs are outside what it saw, and its probabilities sum '
                  'to 1 over its classes whatever a picture shows')


def trained_data_source(checkpoint: str) -> str | None:
  """The run's note on its training data ('data_source' in the checkpoint's meta), or None
  where the checkpoint does not say."""
  path = os.path.join(checkpoint, 'meta', 'metadata')
  try:
    with open(path) as f:
      source = json.load(f).get('data_source')
  except (OSError, ValueError, AttributeError):
    return None
  return source if isinstance(source, str) else None


def _main(argv: list) -> int:
  paths = argv
  if not paths:
    raise app.UsageError('give one or more image files after the flags')
  from resnet_jax.errors import DatasetError
  from resnet_jax.train.inference import load_predictor
  from resnet_jax.train.setup import input_recipe
  from resnet_jax.train.workdir import load_saved_config
  config = load_saved_config(_WORKDIR.value)
  recipe = input_recipe(config)
  readable, images, failed = [], [], 0
  for path in paths:  # All images are read before the checkpoint is loaded.
    try:
      images.append(read_image(path, config.data.image_size, recipe.augmentation))
      readable.append(path)
    except DatasetError as error:
      cli.report(error, SCRIPT.flags.debug)
      failed += 1
  if not readable:
    return cli.EXIT_BAD_INPUT
  images = np.stack(images)
  predictor = load_predictor(_WORKDIR.value, _WHICH.value)
  predictor.check_fits(images.shape[1:], None, 'the images')
  probabilities = predictor.probabilities(images)
  names = predictor.class_names
  top_k = min(_TOP_K.value or default_top_k(len(names)), len(names))
  source = trained_data_source(predictor.checkpoint)
  if source is not None and source.startswith('synthetic'):
    print(SYNTHETIC_NOTE.format(source=source), file=sys.stderr)
  print(f'# {predictor.config.model.name} from {predictor.checkpoint} (step {predictor.step})')
  for path, probs in zip(readable, probabilities):
    ranked = np.argsort(-probs, kind='stable')[:top_k]
    listing = ' '.join(f'{names[i]}:{probs[i]:.3f}' for i in ranked)
    print(f'{path}: class {names[ranked[0]]} (p={probs[ranked[0]]:.3f})  [{listing}]')
  return cli.EXIT_BAD_INPUT if failed else cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  # Orbax's notes on read-only restores are warnings: only errors from it.
  return SCRIPT.run(_main, argv, library_level=logging.ERROR)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
