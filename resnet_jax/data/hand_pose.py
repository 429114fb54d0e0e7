"""Hand poses for the synthetic SIGNS set: a 3D skeleton posed the way people show 0-5 fingers.

The hand frame has the palm's half-width as its unit: x across the palm towards the little
finger (the thumb is at -x), y from the wrist to the fingertips, z out of the palm. Every digit
is a chain of bones (the thumb's metacarpal, then phalanges) whose joints bend towards +z, the
palm's side, so a folded finger ends in front of the palm and a raised one stands above it.
`pose_hands` returns the bones as tapered capsules and the palm as ellipsoids, still in the hand
frame; hand_render.py places and draws them.

The signs follow the course's photographs: 1 is the index finger, 2 index and middle, 3 index,
middle and ring (or thumb, index and middle), 4 the four fingers with the thumb across the palm,
5 the open hand, and 0 a closed hand whose fingertips touch the thumb's tip (an O). Folded
fingers are held down by the thumb.
"""
import numpy as np

NUM_CLASSES = 6
THUMB_THREE_FRACTION = 0.3  # Threes shown as thumb, index and middle.

# Fingers (index, middle, ring, little): knuckle positions, bone lengths (proximal, middle,
# distal phalanx) and radii at (knuckle, middle joint, last joint, tip).
_KNUCKLE = np.array([[-0.68, 0.80, 0.0], [-0.23, 0.86, 0.0], [0.23, 0.82, 0.0],
                     [0.66, 0.68, 0.0]], np.float32)
_PHALANX = np.array([[0.80, 0.48, 0.36], [0.88, 0.55, 0.38], [0.82, 0.52, 0.37],
                     [0.64, 0.38, 0.32]], np.float32)
_RADIUS = np.array([[0.20, 0.18, 0.16, 0.145], [0.21, 0.19, 0.17, 0.155],
                    [0.195, 0.175, 0.16, 0.145], [0.17, 0.155, 0.14, 0.125]], np.float32)
# Sideways angle of each finger at rest and its share of a spread hand (radians, +x).
_REST_ANGLE = np.array([-0.10, 0.0, 0.09, 0.20], np.float32)
_SPREAD_ANGLE = np.array([-0.20, -0.05, 0.10, 0.24], np.float32)
# The thumb: its base joint (at the wrist), bones (metacarpal, proximal, distal), radii.
_THUMB_BASE = np.array([-0.45, -0.95, 0.0], np.float32)
_THUMB_BONE = np.array([0.95, 0.65, 0.52], np.float32)
_THUMB_RADIUS = np.array([0.36, 0.25, 0.22, 0.20], np.float32)
# The palm: ellipsoids (centre, half-axes) whose union is a rounded, squarish slab.
_PALM = np.array([[0.0, -0.12, 0.0, 1.03, 1.05, 0.30],   # The body of the palm.
                  [0.0, 0.56, 0.02, 1.0, 0.38, 0.27],  # The knuckle pad, squaring the top.
                  [0.45, -0.50, -0.03, 0.58, 0.62, 0.30]],  # The heel on the little finger's side.
                 np.float32)
WRIST = np.array([0.0, -1.0, 0.0], np.float32)

# Ways a finger is held: flexion ranges (radians) at its three joints.
_RAISED = ((-0.10, 0.25), (0.0, 0.35), (0.0, 0.25))
_FOLDED = ((1.15, 1.60), (1.45, 1.90), (0.60, 1.10))
_PINCHED = ((0.70, 1.25), (0.90, 1.45), (0.30, 0.70))
# Thumb holds: 0 out to the side, 1 across the palm, 2 over the folded fingers, 3 pinching.
THUMB_OUT, THUMB_ACROSS, THUMB_HOLD, THUMB_PINCH = range(4)
# The thumb's metacarpal for each hold: sideways angle (towards -x) and forward (z) range.
_THUMB_METACARPAL = {THUMB_OUT: ((0.50, 0.85), (0.15, 0.35)),
                     THUMB_ACROSS: ((0.0, 0.30), (0.50, 0.75)),
                     THUMB_HOLD: ((0.05, 0.35), (0.55, 0.80)),
                     THUMB_PINCH: ((0.05, 0.35), (0.85, 1.20))}

# Parts, in the order of `pose_hands`'s capsules: forearm, thumb (3), four fingers (3 each).
NUM_CAPSULES = 1 + 3 + 12
# Which capsules are distal phalanges (they carry the nails).
DISTAL = np.array([False, False, False, True] + [False, False, True] * 4)


def balanced_labels(num: int, rng: np.random.Generator) -> np.ndarray:
  """`num` labels in 0..5, counts differing by at most one, in random order."""
  return rng.permutation(np.arange(num) % NUM_CLASSES)


def extended_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Which of (thumb, index, middle, ring, little) are raised: bool [B, 5], row sums = labels.

  Index first, then middle, ring and little, the thumb last (so that five is the open hand);
  a share of the threes use thumb, index and middle instead.
  """
  thumb_three = (labels == 3) & (rng.random(len(labels)) < THUMB_THREE_FRACTION)
  # The rank of each digit in the order in which fingers are raised.
  rank = np.where(thumb_three[:, None], [[2, 0, 1, 3, 4]], [[4, 0, 1, 2, 3]])
  return rank < labels[:, None]


def thumb_holds(labels: np.ndarray, extended: np.ndarray) -> np.ndarray:
  """How the thumb is held for each picture: int [B] of THUMB_*."""
  hold = np.where(labels == 4, THUMB_ACROSS, THUMB_HOLD)
  hold = np.where(extended[:, 0], THUMB_OUT, hold)
  return np.where(labels == 0, THUMB_PINCH, hold)


def pose_hands(labels: np.ndarray, rng: np.random.Generator) -> dict:
  """The hands of one batch, in the hand frame.

  Returns a dict with
    capsules: float32 [B, NUM_CAPSULES, 8], each (x0, y0, z0, x1, y1, z1, r0, r1): a bone from
      one joint to the next, its radius tapering from r0 to r1;
    palm: float32 [B, 3, 6], ellipsoids (centre, half-axes);
    extended: bool [B, 5], the raised digits (thumb first).
  """
  b = len(labels)
  u = lambda lo, hi, *shape: rng.uniform(lo, hi, (b,) + shape).astype(np.float32)
  extended = extended_digits(labels, rng)
  # The proportions of this hand.
  length = u(0.9, 1.12)[:, None, None] * u(0.94, 1.06, 4, 1) * _PHALANX
  width = u(0.85, 1.15)[:, None, None] * _RADIUS
  palm = np.broadcast_to(_PALM, (b,) + _PALM.shape).copy()
  palm[..., 3:] *= np.stack([u(0.92, 1.08), u(0.95, 1.1), u(0.9, 1.15)], axis=-1)[:, None]

  # Fingers: raised ones fan out by `spread`, folded ones close up; O-shaped zeros pinch.
  raised, folded = extended[:, 1:], ~extended[:, 1:]
  pinched = (labels == 0)[:, None] & folded
  flex = np.zeros((b, 4, 3), np.float32)
  for state, ranges in ((raised, _RAISED), (folded & ~pinched, _FOLDED), (pinched, _PINCHED)):
    draw = np.stack([u(lo, hi, 4) for lo, hi in ranges], axis=-1)
    flex = np.where(state[..., None], draw, flex)
  # Pinching fingers curl together: one shared curl with small differences.
  shared = np.stack([u(lo, hi) for lo, hi in _PINCHED], axis=-1)[:, None]
  flex = np.where(pinched[..., None], 0.7 * shared + 0.3 * flex, flex)
  spread = u(0.25, 1.3)[:, None]
  angle = _REST_ANGLE + np.where(raised, spread, 0.3) * _SPREAD_ANGLE + u(-0.06, 0.06, 4)
  knuckle = _KNUCKLE + np.concatenate([u(-0.03, 0.03, 4, 2), np.zeros((b, 4, 1), np.float32)],
                                      axis=-1)
  joints = _finger_joints(knuckle, angle, flex, length)  # [B, 4, 4, 3]

  thumb = _thumb_joints(thumb_holds(labels, extended), joints, folded, rng)  # [B, 4, 3]
  thumb_r = _THUMB_RADIUS * u(0.88, 1.12)[:, None]

  # The forearm: from inside the palm to far below the picture, bending at the wrist.
  bend, lift = u(-0.45, 0.45), u(-0.35, 0.25)
  arm_dir = np.stack([np.sin(bend) * np.cos(lift), -np.cos(bend) * np.cos(lift),
                      np.sin(lift)], axis=-1)
  arm_start = np.broadcast_to(WRIST + [0.0, 0.4, -0.12], (b, 3))
  arm_end = arm_start + 9.0 * arm_dir
  arm_r = u(0.58, 0.7)

  capsules = np.zeros((b, NUM_CAPSULES, 8), np.float32)
  capsules[:, 0] = np.concatenate([arm_start, arm_end, arm_r[:, None], 1.3 * arm_r[:, None]], -1)
  for k in range(3):
    capsules[:, 1 + k] = np.concatenate(
        [thumb[:, k], thumb[:, k + 1], thumb_r[:, k:k + 1], thumb_r[:, k + 1:k + 2]], -1)
  for f in range(4):
    for k in range(3):
      capsules[:, 4 + 3 * f + k] = np.concatenate(
          [joints[:, f, k], joints[:, f, k + 1], width[:, f, k:k + 1], width[:, f, k + 1:k + 2]],
          -1)
  return dict(capsules=capsules, palm=palm, extended=extended)


def _finger_joints(knuckle, angle, flex, length):
  """Joint positions [B, 4, 4, 3] (knuckle, middle, last, tip) of the four fingers."""
  direction = np.stack([np.sin(angle), np.cos(angle), np.zeros_like(angle)], axis=-1)
  z = np.array([0.0, 0.0, 1.0], np.float32)
  total = np.cumsum(flex, axis=-1)  # Each bone's angle from the palm's plane.
  bones = (np.cos(total)[..., None] * direction[:, :, None] +
           np.sin(total)[..., None] * z) * length[..., None]
  return np.concatenate([knuckle[:, :, None], knuckle[:, :, None] + np.cumsum(bones, axis=2)],
                        axis=2)


def _thumb_joints(hold, fingers, folded, rng):
  """Joint positions [B, 4, 3] of the thumb (base, knuckle, middle joint, tip).

  The metacarpal's direction is drawn for the hold; the two phalanges then reach for a target
  (two-bone inverse kinematics): out to the side, a spot on the palm, the folded fingers, or the
  tips of the index and middle fingers for a zero's O.
  """
  b = len(hold)
  u = lambda lo, hi: rng.uniform(lo, hi, b).astype(np.float32)
  side, forward = np.zeros(b, np.float32), np.zeros(b, np.float32)
  for kind, ((s_lo, s_hi), (f_lo, f_hi)) in _THUMB_METACARPAL.items():
    side = np.where(hold == kind, u(s_lo, s_hi), side)
    forward = np.where(hold == kind, u(f_lo, f_hi), forward)
  meta_dir = _unit(np.stack([-np.sin(side), np.cos(side), forward], axis=-1))
  bone = _THUMB_BONE * rng.uniform(0.9, 1.1, (b, 1)).astype(np.float32)
  base = _THUMB_BASE + rng.uniform(-0.05, 0.05, (b, 3)).astype(np.float32)
  knuckle = base + bone[:, :1] * meta_dir
  reach = bone[:, 1] + bone[:, 2]

  # Out to the side: roughly along the metacarpal, nearly straight.
  out_angle = side + u(-0.2, 0.15)
  out_dir = _unit(np.stack([-np.sin(out_angle), np.cos(out_angle), u(0.0, 0.35)], axis=-1))
  out = knuckle + (reach * u(0.9, 0.99))[:, None] * out_dir
  # Across the palm, resting on it towards the little finger's side.
  across = np.stack([u(0.0, 0.45), u(-0.15, 0.3), u(0.45, 0.6)], axis=-1)
  # Over the folded fingers' middle bones (their mean), a little in front of them.
  middle_bones = 0.5 * (fingers[:, :, 1] + fingers[:, :, 2])
  weight = folded.astype(np.float32)[..., None]
  held = (middle_bones * weight).sum(1) / np.maximum(weight.sum(1), 1.0)
  hold_target = held + np.stack([u(-0.15, 0.1), u(-0.2, 0.1), u(0.15, 0.3)], axis=-1)
  # The O: the tips of the index and middle fingers.
  pinch = 0.5 * (fingers[:, 0, 3] + fingers[:, 1, 3]) + rng.uniform(
      -0.08, 0.08, (b, 3)).astype(np.float32)
  target = np.select([hold[:, None] == THUMB_OUT, hold[:, None] == THUMB_ACROSS,
                      hold[:, None] == THUMB_HOLD], [out, across, hold_target], pinch)
  # The middle joint bows away from the palm's centre.
  hint = np.broadcast_to(np.array([-1.0, 0.2, 0.6], np.float32), (b, 3))
  middle, tip = _two_bones(knuckle, target, bone[:, 1], bone[:, 2], hint)
  return np.stack([base, knuckle, middle, tip], axis=1)


def _two_bones(base, target, first, second, hint):
  """The joint and the end [B, 3] of two bones from `base` reaching towards `target`."""
  offset = target - base
  distance = np.linalg.norm(offset, axis=-1)
  towards = offset / np.maximum(distance, 1e-6)[:, None]
  distance = np.clip(distance, np.abs(first - second) + 1e-3, 0.999 * (first + second))
  cos_a = np.clip((first ** 2 + distance ** 2 - second ** 2) / (2 * first * distance), -1, 1)
  bow = _unit(hint - (hint * towards).sum(-1, keepdims=True) * towards)
  joint = base + first[:, None] * (cos_a[:, None] * towards +
                                   np.sqrt(1 - cos_a ** 2)[:, None] * bow)
  return joint, base + distance[:, None] * towards


def _unit(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
