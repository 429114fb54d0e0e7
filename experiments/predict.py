"""Class probabilities for image files, from a training run's best checkpoint.

  python experiments/predict.py --workdir runs/signs_resnet50 my_hand.jpg other.png

The course's "test with your own image": each image is read with Pillow, converted to RGB,
resized to the run's image size and preprocessed as in training. Prints one line per image
with the predicted class and every class's probability. --checkpoint=latest uses the
newest checkpoint instead of the best by eval accuracy. Bad input (an unreadable image, a
workdir without a run) prints one `error:` line and exits with code 2 (--debug shows the
traceback).
"""
import logging
import sys

import numpy as np
from absl import app, flags

from experiments import cli

SCRIPT = cli.Script(__doc__)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/signs_resnet50', "A training run's workdir.",
                               flag_values=SCRIPT.flags)
_WHICH = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to use.',
                           flag_values=SCRIPT.flags)


def read_image(path: str, size: int) -> np.ndarray:
  """uint8 [size, size, 3] from an image file; DatasetError naming the file if unreadable."""
  from PIL import Image, UnidentifiedImageError

  from resnet_jax.errors import DatasetError
  try:
    with Image.open(path) as image:
      image = image.convert('RGB').resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, UnidentifiedImageError) as error:
    raise DatasetError(f'{path!r} cannot be read as an image ({error}); expected a JPEG, PNG '
                       'or another format Pillow reads') from error


def _main(argv: list) -> int:
  paths = argv
  if not paths:
    raise app.UsageError('give one or more image files after the flags')
  from resnet_jax.train.inference import load_predictor
  predictor = load_predictor(_WORKDIR.value, _WHICH.value)
  size = predictor.config.image_size
  images = np.stack([read_image(p, size) for p in paths])
  probabilities = predictor.probabilities(images)
  print(f'# {predictor.config.model} from {predictor.checkpoint} (step {predictor.step})')
  names = predictor.class_names
  for path, probs in zip(paths, probabilities):
    best = int(np.argmax(probs))
    listing = ' '.join(f'{name}:{p:.3f}' for name, p in zip(names, probs))
    print(f'{path}: class {names[best]} (p={probs[best]:.3f})  [{listing}]')
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  # Orbax's notes on read-only restores are warnings: only errors from it.
  return SCRIPT.run(_main, argv, library_level=logging.ERROR)


if __name__ == '__main__':
  sys.exit(main())
