"""A synthetic stand-in for SIGNS: 64x64 pictures of a hand showing 0-5 extended fingers.

Every picture is rendered from signed distances in the hand's own frame (palm centre at the
origin, fingers along +v, lengths in palm half-widths), so one vectorised numpy pass draws a whole
batch with no drawing library. The class is the number of extended fingers, the thumb included;
folded fingers leave their knuckles and a curled-tip crease on the palm. Pose, size, finger
lengths and spread, skin tone, lighting, background, blur and noise vary per picture so that
the count is easy for a small CNN but hard for a linear model on raw pixels.
"""
import contextlib
import os

import h5py
import numpy as np

from resnet_jax import storage
from resnet_jax.data.signs import SIGNS_FILES
from resnet_jax.errors import ConfigError, DatasetError

NUM_CLASSES = 6
IMAGE_SIZE = 64
# Part of the cache key of the default set: bump it whenever the pictures change.
GENERATOR_VERSION = 2
THUMB_THREE_FRACTION = 0.3  # Threes shown as thumb, index and middle.
_CHUNK = 128  # Pictures rendered per numpy pass; fixed, so that output does not depend on it.

# Fingers in the hand frame, thumb side at -u: index, middle, ring, little.
_FINGER_BASE_U = np.array([-0.72, -0.24, 0.24, 0.70], np.float32)
_FINGER_BASE_V = np.array([0.86, 0.95, 0.90, 0.74], np.float32)
_FINGER_LENGTH = np.array([1.75, 1.95, 1.80, 1.40], np.float32)
_FINGER_RADIUS = np.array([0.21, 0.22, 0.21, 0.18], np.float32)


def make_synthetic_signs(out_dir: str, num_train: int = 1080, num_test: int = 120, seed: int = 0,
                         overwrite: bool = False) -> tuple[str, str]:
  """Writes `train_signs.h5` and `test_signs.h5` in the course's layout into `out_dir`.

  Classes are balanced (counts differ by at most one), and the files depend only on
  (num_train, num_test, seed). Each file is written to a temporary name and moved into place,
  so a failed run leaves no half-written dataset.

  Returns:
    The paths of the train and test files.
  Raises:
    ConfigError for a non-positive size; DatasetError if a file exists and overwrite is False.
  """
  for name, value in (('num_train', num_train), ('num_test', num_test)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ConfigError(f'make_synthetic_signs: {name}={value!r}, expected a positive integer')
  paths = tuple(os.path.join(out_dir, name) for name in SIGNS_FILES)
  if not overwrite:
    for path in paths:
      if os.path.exists(path):
        raise DatasetError(f'{path!r} already exists; refusing to overwrite it '
                           f'(pass overwrite=True to replace it)')
  os.makedirs(out_dir, exist_ok=True)
  # Separate streams: the test set does not change when num_train does.
  seeds = np.random.SeedSequence([seed, GENERATOR_VERSION]).spawn(2)
  splits = (('train', num_train, seeds[0]), ('test', num_test, seeds[1]))
  # Both files are written before either replaces what is there: all or nothing.
  with contextlib.ExitStack() as files:
    for (split, num, seq), path in zip(splits, paths):
      temp = files.enter_context(storage.replaced_on_success(path, suffix='.h5.tmp'))
      images, labels = render_signs(num, np.random.default_rng(seq))
      _write_split(temp, split, images, labels)
  return paths


def _write_split(path: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
  with h5py.File(path, 'w') as f:
    f.create_dataset(f'{split}_set_x', data=images)
    f.create_dataset(f'{split}_set_y', data=labels.astype(np.int64))
    f.create_dataset('list_classes', data=np.arange(NUM_CLASSES, dtype=np.int64))


def balanced_labels(num: int, rng: np.random.Generator) -> np.ndarray:
  """`num` labels in 0..5, counts differing by at most one, in random order."""
  return rng.permutation(np.arange(num) % NUM_CLASSES)


def render_signs(num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Renders `num` pictures with balanced labels: (uint8 [num, 64, 64, 3], int64 [num])."""
  labels = balanced_labels(num, rng)
  images = np.empty((num, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for start in range(0, num, _CHUNK):
    stop = min(start + _CHUNK, num)
    pose = _sample_pose(labels[start:stop], rng)
    images[start:stop] = _render(pose, rng)
  return images, labels


def _extended_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Which of (thumb, index, middle, ring, little) are extended: bool [B, 5], row sums = labels.

  The course's signs: index first, then middle, ring and little, the thumb last (so that five
  is the open hand); a share of the threes use thumb, index and middle instead.
  """
  b = len(labels)
  thumb_three = (labels == 3) & (rng.random(b) < THUMB_THREE_FRACTION)
  # The rank of each digit in the order in which fingers are raised.
  rank = np.where(thumb_three[:, None], [[2, 0, 1, 3, 4]], [[4, 0, 1, 2, 3]])
  return rank < labels[:, None]


def _sample_pose(labels: np.ndarray, rng: np.random.Generator) -> dict:
  """Per-picture parameters: the hand's parts in its own frame, its placement, and the scene."""
  b = len(labels)
  u = lambda lo, hi, *shape: rng.uniform(lo, hi, (b,) + shape).astype(np.float32)
  extended = _extended_digits(labels, rng)
  palm_width, palm_height = u(0.92, 1.08), u(1.0, 1.2)

  # Digits as capsules (u0, v0, u1, v1, radius), thumb first. Extended fingers fan out by
  # `spread`; folded ones leave a short, wider knuckle stub on the palm's upper edge.
  # Version 1 drew spread 0.22-0.3 and palms 9-11.5 px: neighbouring fingers, 4 px wide,
  # merged at 64x64, and the main job's ResNet-50 confused 3/4/5 (0.81 on fresh pictures).
  # The course's photos show spread fingers on a hand filling most of the frame.
  spread = u(0.3, 0.38)[:, None]
  f_ext = extended[:, 1:]
  f_angle = (np.arange(4) - 1.5) * spread + u(-0.05, 0.05, 4)
  f_length = np.where(f_ext, _FINGER_LENGTH * u(0.9, 1.15)[:, None] * u(0.92, 1.08, 4),
                      u(0.1, 0.25, 4))
  f_radius = _FINGER_RADIUS * u(0.9, 1.1)[:, None] * u(0.95, 1.05, 4) * np.where(f_ext, 1.0, 1.25)
  f_u0 = _FINGER_BASE_U * palm_width[:, None]
  f_v0 = _FINGER_BASE_V * palm_height[:, None] / 1.1
  fingers = np.stack([f_u0, f_v0, f_u0 + f_length * np.sin(f_angle),
                      f_v0 + f_length * np.cos(f_angle), f_radius], axis=-1)
  # The thumb points out and up when extended and lies across the palm when folded.
  t_ext = extended[:, 0]
  t_angle, t_length = u(0.8, 1.2), u(1.3, 1.6)
  t_u0, t_v0 = -0.78 * palm_width, np.full(b, -0.35, np.float32)
  thumb = np.stack([t_u0, t_v0, np.where(t_ext, t_u0 - t_length * np.sin(t_angle), -0.2),
                    np.where(t_ext, t_v0 + t_length * np.cos(t_angle), 0.05),
                    np.full(b, 0.26, np.float32)], axis=-1)
  digits = np.concatenate([thumb[:, None], fingers], axis=1).astype(np.float32)

  scale = u(10.5, 12.5)  # Palm half-width in pixels.
  angle = u(-0.3, 0.3)  # Rotation of the whole hand, radians.
  mirror = np.where(rng.random(b) < 0.5, -1.0, 1.0).astype(np.float32)  # Left or right hand.
  center = _place(digits, palm_width, palm_height, scale, angle, mirror, rng)
  return dict(
      extended=extended, digits=digits, palm_width=palm_width, palm_height=palm_height,
      center=center, scale=scale, angle=angle, mirror=mirror,
      wrist_bend=u(-0.2, 0.2),
      arm_radius=u(0.68, 0.82),
      skin=_sample_skin(rng, b),
      background=_sample_background(rng, b),
      light_dir=u(0, 2 * np.pi),
      light_strength=u(0.0, 0.4),
      brightness=u(0.85, 1.1),
      blur=u(0.0, 0.4),
      noise=u(1.0, 4.0) / 255.0,
  )


def _place(digits, palm_width, palm_height, scale, angle, mirror, rng):
  """Palm centres [B, 2] in pixels that keep the whole hand (not the forearm) in view.

  The hand's extent is measured after rotation, and its top edge and horizontal position are
  drawn within what fits: a fist sits as high in the picture as an open hand, so the empty
  space above the fingers says nothing about the count.
  """
  tips_u = digits[..., 2] + np.sign(digits[..., 2] - digits[..., 0]) * digits[..., 4]
  tips_v = digits[..., 3] + digits[..., 4]
  palm_u = np.stack([-palm_width, palm_width, np.zeros_like(palm_width)], axis=1)
  palm_v = np.stack([np.zeros_like(palm_width)] * 2 + [palm_height + 0.05], axis=1)
  hu = np.concatenate([tips_u, palm_u], axis=1) * (mirror * scale)[:, None]
  hv = np.concatenate([tips_v, palm_v], axis=1) * scale[:, None]
  cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
  dx = cos * hu - sin * hv  # Offsets from the palm centre, x right.
  up = sin * hu + cos * hv  # Offsets from the palm centre, y up.
  margin = 2.0
  top = rng.uniform(margin, 20.0, len(scale))
  center_y = np.minimum(top + up.max(axis=1), IMAGE_SIZE - 6.0)
  lo = margin - dx.min(axis=1)
  hi = IMAGE_SIZE - margin - dx.max(axis=1)
  center_x = np.where(hi > lo, lo + rng.random(len(scale)) * (hi - lo), (lo + hi) / 2)
  return np.stack([center_x, center_y], axis=1).astype(np.float32)


def _sample_skin(rng: np.random.Generator, b: int) -> np.ndarray:
  dark = np.array([0.42, 0.27, 0.19], np.float32)
  light = np.array([0.88, 0.70, 0.58], np.float32)
  t = rng.uniform(0.0, 1.0, (b, 1)).astype(np.float32)
  tint = rng.uniform(-0.04, 0.04, (b, 3)).astype(np.float32)
  return dark + t * (light - dark) + tint


def _sample_background(rng: np.random.Generator, b: int) -> np.ndarray:
  level = rng.uniform(0.66, 0.97, (b, 1)).astype(np.float32)
  tint = rng.uniform(-0.08, 0.08, (b, 3)).astype(np.float32)
  return np.clip(level + tint, 0.0, 1.0)


def _render(pose: dict, rng: np.random.Generator) -> np.ndarray:
  """Draws the pictures of one chunk: float compositing, then lighting, blur, noise, uint8."""
  pix = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
  px, py = pix[None, None, :], pix[None, :, None]

  def col(value):  # A per-picture value broadcast over the pixels.
    return value[:, None, None]

  # Every pixel in the hand's frame: u across the palm (thumb side negative), v to the fingertips.
  dx = px - col(pose['center'][:, 0])
  dy = col(pose['center'][:, 1]) - py
  cos, sin, s = col(np.cos(pose['angle'])), col(np.sin(pose['angle'])), col(pose['scale'])
  hu = (cos * dx + sin * dy) / s * col(pose['mirror'])
  hv = (-sin * dx + cos * dy) / s

  # All parts share one skin colour, so painting them in order over the background reduces to
  # two grey maps: image = background * uncovered + skin * tone. Each part updates both with its
  # coverage `alpha` exactly as the "over" operator would, at a third of the cost.
  uncovered = np.ones_like(hu)
  tone = np.zeros_like(hu)

  def paint(dist, rim, shade=1.0):
    """Paints a skin-coloured part whose signed distance (hand units) is `dist`."""
    depth = -dist * s  # Pixels inside the edge.
    alpha = np.clip(depth + 0.5, 0.0, 1.0)
    # A darker rim inside each part's edge: the outlines that keep touching fingers apart.
    part_tone = shade * (1.0 - rim * np.exp(-np.maximum(depth, 0.0) / 1.3))
    uncovered[...] *= 1.0 - alpha
    tone[...] += alpha * (part_tone - tone)

  # Forearm, from the wrist to well below the picture's lower edge; then the palm.
  bend = col(pose['wrist_bend'])
  paint(_capsule(hu, hv, 0.0, -0.4, 7.0 * np.sin(bend), -0.4 - 7.0 * np.cos(bend),
                 col(pose['arm_radius'])), rim=0.45, shade=0.95)
  paint(_ellipse(hu, hv, 0.0, 0.05, col(pose['palm_width']), col(pose['palm_height'])), rim=0.35)
  extended, digits = pose['extended'], pose['digits']
  for j in range(5):
    u0, v0, u1, v1, radius = (col(digits[:, j, k]) for k in range(5))
    # Folded digits get fainter outlines, so that they do not read as fingers: the thumb lies
    # flat across the palm, the other fingers show only their knuckles.
    rim = np.where(col(extended[:, j]), 0.5, 0.2 if j == 0 else 0.3)
    paint(_capsule(hu, hv, u0, v0, u1, v1, radius), rim=rim)
    if j > 0:  # The curled fingertip's crease across the palm, where the finger is folded.
      crease = _capsule(hu, hv, u0 - 0.18, 0.35, u0 + 0.18, 0.3, 0.0)
      line = np.clip(1.0 - np.abs(crease * s) / 0.9, 0.0, 1.0) * col(~extended[:, j])
      tone *= 1.0 - 0.3 * line
  image = (pose['background'][:, None, None, :] * uncovered[..., None] +
           pose['skin'][:, None, None, :] * tone[..., None])

  # Lighting: a soft directional gradient and an overall brightness.
  direction = pose['light_dir']
  gradient = ((px - IMAGE_SIZE / 2) * col(np.cos(direction)) +
              (py - IMAGE_SIZE / 2) * col(np.sin(direction))) / IMAGE_SIZE
  light = col(pose['brightness']) * (1.0 + 2.0 * col(pose['light_strength']) * gradient)
  image *= light[..., None]
  # Defocus: blend with a [1, 2, 1] binomial blur, a different amount per picture.
  blurred = _binomial_blur(_binomial_blur(image, 1), 2)
  image += pose['blur'][:, None, None, None] * (blurred - image)
  image += rng.standard_normal(image.shape, dtype=np.float32) * pose['noise'][:, None, None, None]
  return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _capsule(u, v, u0, v0, u1, v1, radius):
  """Signed distance to the segment (u0, v0)-(u1, v1) thickened by `radius`."""
  du, dv = u1 - u0, v1 - v0
  pu, pv = u - u0, v - v0
  t = np.clip((pu * du + pv * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
  return np.sqrt((pu - t * du) ** 2 + (pv - t * dv) ** 2) - radius


def _ellipse(u, v, cu, cv, half_width, half_height):
  """Approximate signed distance to an axis-aligned ellipse (exact on the axes)."""
  r = np.sqrt(((u - cu) / half_width) ** 2 + ((v - cv) / half_height) ** 2)
  return (r - 1.0) * np.minimum(half_width, half_height)


def _binomial_blur(image, axis):
  padded = np.concatenate([image.take([0], axis), image, image.take([-1], axis)], axis)
  n = image.shape[axis]
  return (0.25 * padded.take(np.arange(0, n), axis) + 0.5 * image +
          0.25 * padded.take(np.arange(2, n + 2), axis))
