"""Class probabilities for image files, from a training run's best checkpoint.

  python experiments/predict.py --workdir runs/signs_resnet50 my_hand.jpg other.png

The course's "test with your own image": each image is read with Pillow, converted to RGB,
resized to the run's image size and preprocessed as in training. Prints one line per image
with the predicted class and every class's probability. --checkpoint=latest uses the
newest checkpoint instead of the best by eval accuracy.
"""
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string('workdir', 'runs/signs_resnet50', 'A training run\'s workdir.')
_WHICH = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to use.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks.')


def read_image(path: str, size: int) -> np.ndarray:
  """uint8 [size, size, 3] from an image file; ValueError naming the file if unreadable."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as image:
      image = image.convert('RGB').resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, UnidentifiedImageError) as error:
    raise ValueError(f'{path!r} cannot be read as an image ({error}); expected a JPEG, PNG or '
                     'another format Pillow reads') from error


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('give one or more image files after the flags')
  from resnet_jax.errors import ResNetJaxError
  from resnet_jax.train.inference import load_predictor
  try:
    predictor = load_predictor(_WORKDIR.value, _WHICH.value)
    size = predictor.config.image_size
    images = np.stack([read_image(p, size) for p in paths])
  except (ResNetJaxError, ValueError) as error:
    if _DEBUG.value:
      traceback.print_exc()
    print(f'error: {error}', file=sys.stderr)
    return 2
  probabilities = predictor.probabilities(images)
  print(f'# {predictor.config.model} from {predictor.checkpoint} (step {predictor.step})')
  names = predictor.class_names
  for path, probs in zip(paths, probabilities):
    best = int(np.argmax(probs))
    listing = ' '.join(f'{name}:{p:.3f}' for name, p in zip(names, probs))
    print(f'{path}: class {names[best]} (p={probs[best]:.3f})  [{listing}]')
  return 0


if __name__ == '__main__':
  app.run(main)
