"""A synthetic stand-in for SIGNS: 64x64 photographs of a hand showing 0-5 raised fingers.

The course's photographs show one hand held up in front of a light, warm off-white wall, lit
from the front, the forearm entering from below. Each picture here is made the same way: a
hand with a palm, knuckles and three bones per finger is posed as people show the count
(hand_pose.py), turned and placed in front of the camera, drawn with shading from a light
direction (hand_render.py), in front of a wall on which it casts a soft shadow, and
photographed: focus blur, white balance, exposure, sensor noise, JPEG (photo_effects.py).
Everything that is not the count is drawn from broad ranges around what the photographs
show, so that a network trained here learns the count and not the style. Pictures depend
only on the seed; one numpy pass renders a chunk of them.
"""
import contextlib
import os

import h5py
import numpy as np

from resnet_jax import storage
from resnet_jax.data import hand_pose, hand_render, photo_effects
from resnet_jax.data.hand_pose import THUMB_THREE_FRACTION, balanced_labels, extended_digits
from resnet_jax.data.signs import SIGNS_FILES
from resnet_jax.errors import ConfigError, DatasetError

NUM_CLASSES = hand_pose.NUM_CLASSES
IMAGE_SIZE = 64
# Part of the cache key of the default set: bump it whenever the pictures change.
GENERATOR_VERSION = 4
_CHUNK = 64  # Pictures rendered per numpy pass; fixed, so that output does not depend on it.

__all__ = ['GENERATOR_VERSION', 'IMAGE_SIZE', 'NUM_CLASSES', 'THUMB_THREE_FRACTION',
           'balanced_labels', 'extended_digits', 'make_synthetic_signs', 'render_signs']


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


def render_signs(num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Renders `num` pictures with balanced labels: (uint8 [num, 64, 64, 3], int64 [num])."""
  labels = balanced_labels(num, rng)
  images = np.empty((num, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for start in range(0, num, _CHUNK):
    stop = min(start + _CHUNK, num)
    images[start:stop], _ = _render_chunk(labels[start:stop], rng)
  return images, labels


def _render_chunk(labels: np.ndarray, rng: np.random.Generator):
  """Pictures of `labels`: uint8 [B, 64, 64, 3], and the hand's and forearm's coverage of
  each pixel (float [B, 64, 64], 0 to 1)."""
  b = len(labels)
  u = lambda lo, hi, *shape: rng.uniform(lo, hi, (b,) + shape).astype(np.float32)
  pose = hand_pose.pose_hands(labels, rng)
  view = _sample_view(labels, pose, rng)
  buf = hand_render.draw_hands(pose, view, IMAGE_SIZE)

  # Skin: a tone from a broad range, mottled at low frequency.
  buf.tone *= 1.0 + u(0.01, 0.06)[:, None, None] * photo_effects.smooth_noise(
      rng, b, IMAGE_SIZE, 8)
  light = _sample_light(b, rng)
  hand = hand_render.shade_skin(buf, _sample_skin(b, rng), light)

  # The wall: off-white and warm like the course's, with others around it.
  colour = _sample_wall(b, rng)
  gradient = np.stack([u(-0.12, 0.12), u(-0.04, 0.22)], axis=-1)
  texture = 1.0 + u(0.0, 0.02)[:, None, None] * photo_effects.smooth_noise(
      rng, b, IMAGE_SIZE, 4)
  background = photo_effects.wall(colour, gradient, u(0.0, 0.2), texture, IMAGE_SIZE)
  # The shadow falls away from the light, further the further the hand is from the wall.
  away = -light['direction'][:, :2] / np.maximum(light['direction'][:, 2:], 0.3)
  shift = away * u(2.0, 7.0)[:, None]
  softness = int(rng.integers(1, 4))
  background *= photo_effects.cast_shadow(buf.coverage, shift, softness,
                                          u(0.06, 0.35))[..., None]
  alpha = buf.coverage[..., None]
  image = background * (1.0 - alpha) + hand * alpha

  # The camera: exposure and white balance, focus, a tone curve, noise, 8 bits, JPEG.
  image *= (u(0.88, 1.12)[:, None] * (1.0 + u(-0.05, 0.05, 3)))[:, None, None, :]
  image = photo_effects.gaussian_blur(image, u(0.25, 0.85))
  image = np.power(np.clip(image, 0.0, 1.0), u(0.85, 1.15)[:, None, None, None])
  noise = u(0.5, 3.0) / 255.0
  image += rng.standard_normal(image.shape, dtype=np.float32) * noise[:, None, None, None]
  image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
  quality = np.where(rng.random(b) < 0.75, rng.integers(40, 96, b), 0)
  return photo_effects.jpeg(image, quality), buf.coverage


def _sample_view(labels, pose, rng):
  """How each hand faces the camera, its size and where it is in the picture."""
  b = len(labels)
  u = lambda lo, hi: rng.uniform(lo, hi, b).astype(np.float32)
  zero = labels == 0
  # Zeros are shown side-on, so that the O between thumb and fingers shows.
  yaw = np.where(zero, np.sign(u(-1, 1)) * u(0.3, 1.0), u(-0.45, 0.45))
  back = ~zero & (rng.random(b) < 0.15)
  mirror = np.where(rng.random(b) < 0.5, -1.0, 1.0).astype(np.float32)
  rotation = hand_render.rotations(yaw, u(-0.3, 0.3), u(-0.75, 0.75), mirror, back)
  scale = u(9.0, 16.0)
  offset = _place(pose, rotation, scale, rng)
  return dict(rotation=rotation, scale=scale, offset=offset, back=back, crease=u(0.0, 0.25))


def _place(pose, rotation, scale, rng):
  """Offsets [B, 2] that put the hand (not the forearm) in view, anywhere it fits.

  Its top, left and right edges keep a margin of -2 to 3 pixels (a fingertip may leave the
  picture); where the hand is larger than the picture it is centred.
  """
  b = len(scale)
  zero = np.zeros((b, 2), np.float32)
  caps = pose['capsules'][:, 1:]
  ends = hand_render.to_camera(caps[..., :6].reshape(b, -1, 2, 3), rotation, scale, zero)
  radius = caps[..., 6:] * scale[:, None, None]
  palm = pose['palm']
  centers = hand_render.to_camera(palm[..., :3], rotation, scale, zero)
  # An ellipsoid's projected half-extent along x and y: |rows of R diag(half)|.
  half = np.sqrt(np.einsum('bij,bkj->bki', rotation[:, :2] ** 2,
                           (palm[..., 3:] * scale[:, None, None]) ** 2))
  lo = np.concatenate([(ends[..., :2] - radius[..., None]).reshape(b, -1, 2),
                       centers[..., :2] - half], axis=1).min(axis=1)
  hi = np.concatenate([(ends[..., :2] + radius[..., None]).reshape(b, -1, 2),
                       centers[..., :2] + half], axis=1).max(axis=1)
  margin = rng.uniform(-2.0, 3.0, (b, 2)).astype(np.float32)
  first = margin - lo  # The smallest offset that keeps the low edge in.
  last = IMAGE_SIZE - margin - hi
  where = rng.random((b, 2)).astype(np.float32)
  offset = np.where(last > first, first + where * (last - first), (first + last) / 2)
  # y is up: the hand's top is `hi`; let its bottom go below the picture if it must.
  return offset.astype(np.float32)


def _sample_light(b, rng):
  u = lambda lo, hi: rng.uniform(lo, hi, b).astype(np.float32)
  direction = np.stack([u(-0.9, 0.9), u(-0.5, 1.0), np.ones(b, np.float32)], axis=-1)
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  return dict(direction=direction, ambient=u(0.3, 0.6), specular=u(0.0, 0.12),
              occlusion=u(0.2, 0.6))


def _sample_skin(b, rng):
  """Albedos [B, 3] from pale to dark, most of them in the range of the course's hands."""
  light = np.array([0.84, 0.62, 0.50], np.float32)
  medium = np.array([0.64, 0.43, 0.31], np.float32)
  dark = np.array([0.40, 0.25, 0.17], np.float32)
  t = np.where(rng.random(b) < 0.75, rng.uniform(0.0, 1.0, b), rng.uniform(1.0, 2.0, b))
  t = t.astype(np.float32)[:, None]
  colour = np.where(t < 1.0, light + t * (medium - light), medium + (t - 1.0) * (dark - medium))
  return colour * (1.0 + rng.uniform(-0.04, 0.04, (b, 3)).astype(np.float32))


def _sample_wall(b, rng):
  """Wall colours [B, 3]: mostly light warm off-white, some greyer, cooler or darker."""
  level = rng.uniform(0.78, 0.97, b).astype(np.float32)
  warm = rng.uniform(0.0, 0.07, b).astype(np.float32)
  common = level[:, None] * (1.0 + np.stack([warm * 0.5, 0 * warm, -warm], axis=-1))
  other = (rng.uniform(0.55, 0.95, (b, 1)) + rng.uniform(-0.04, 0.04, (b, 3))).astype(np.float32)
  return np.where((rng.random(b) < 0.9)[:, None], common, other).astype(np.float32)
