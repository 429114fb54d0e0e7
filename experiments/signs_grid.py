"""A figure of synthetic SIGNS pictures, one column per class, for a person to judge them.

  python experiments/signs_grid.py   # writes experiments/figures/synthetic_signs_grid.png
  python experiments/signs_grid.py --per_class 12 --seed 3 --zoom 3 --out /tmp/grid.png

Renders --per_class pictures of each class (0-5 raised fingers) with the generator that the
main job trains on when the course's files are absent (resnet_jax/data/synthetic_signs.py),
from a generator seeded with --seed, and writes a PNG: a column per class headed by its
number, each picture enlarged --zoom times (nearest neighbour, so the pixels show). The file
is replaced only once it is complete. Bad input prints one `error:` line and exits with code
2 (--debug shows the traceback).
"""
import io
import os
import sys

import numpy as np
from absl import app, flags

from experiments import cli

SCRIPT = cli.Script(__doc__)
_OUT = flags.DEFINE_string('out', 'experiments/figures/synthetic_signs_grid.png',
                           'The PNG to write; its directory must exist.', flag_values=SCRIPT.flags)
_PER_CLASS = flags.DEFINE_integer('per_class', 8, 'Pictures per class (rows).', lower_bound=1,
                                  upper_bound=100, flag_values=SCRIPT.flags)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the pictures drawn.', lower_bound=0,
                             flag_values=SCRIPT.flags)
_ZOOM = flags.DEFINE_integer('zoom', 2, 'Enlargement of each 64x64 picture.', lower_bound=1,
                            upper_bound=8, flag_values=SCRIPT.flags)

_GAP = 4  # Pixels between pictures.
_HEADER = 20  # Pixels above the columns for the class numbers.


def grid_png(images: np.ndarray, labels: np.ndarray, per_class: int, zoom: int) -> bytes:
  """The PNG bytes of a grid: a column per class (ascending), `per_class` rows, headed."""
  from PIL import Image, ImageDraw
  classes = np.unique(labels)
  side = images.shape[1] * zoom
  width = len(classes) * (side + _GAP) + _GAP
  height = _HEADER + per_class * (side + _GAP) + _GAP
  canvas = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for column, label in enumerate(classes):
    left = _GAP + column * (side + _GAP)
    draw.text((left + side // 2 - 3, 4), str(label), fill=(0, 0, 0))
    for row, image in enumerate(images[labels == label][:per_class]):
      picture = Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST)
      canvas.paste(picture, (left, _HEADER + row * (side + _GAP)))
  data = io.BytesIO()
  canvas.save(data, format='PNG')
  return data.getvalue()


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  from resnet_jax import storage
  from resnet_jax.data import synthetic_signs
  from resnet_jax.errors import ConfigError
  out = _OUT.value
  directory = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(directory):
    raise ConfigError(f'--out {out!r}: directory {directory!r} does not exist; expected an '
                      'existing directory for the figure')
  if not out.lower().endswith('.png'):
    raise ConfigError(f'--out {out!r} does not end in .png; expected a PNG file name')
  per_class = _PER_CLASS.value
  rng = np.random.default_rng([_SEED.value, synthetic_signs.GENERATOR_VERSION])
  images, labels = synthetic_signs.render_signs(per_class * synthetic_signs.NUM_CLASSES, rng)
  storage.write_bytes_atomic(out, grid_png(images, labels, per_class, _ZOOM.value))
  print(f'wrote {out}: {per_class} pictures of each of {synthetic_signs.NUM_CLASSES} classes '
        f'(generator version {synthetic_signs.GENERATOR_VERSION}, seed {_SEED.value})')
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run(_main, argv)


if __name__ == '__main__':
  sys.exit(main())
