"""A small software rasteriser for the synthetic SIGNS hands: capsules and ellipsoids, shaded.

The camera looks along -z with an orthographic projection; pixel coordinates have x to the
right and y up. Each part (a bone: a capsule whose radius tapers; the palm: ellipsoids) is
intersected in closed form with the rays of the pixels in a window around it (the same size in
every picture of a batch, so a part costs its size, not the picture's), the nearest surface
wins (a depth buffer), and the winner leaves its depth, its normal and its skin tone; the
palm blends into the parts it meets (wrist, thumb, finger roots). Shading then adds a light
direction (wrapped diffuse light, as skin scatters it), a weak specular highlight, occlusion
where one part lies close in front of another, and redder shadows. Edges against the
background are anti-aliased from each part's distance to its outline.

numpy only; one pass draws a batch of pictures, a part at a time.
"""
import numpy as np

from resnet_jax.data import hand_pose

_FRINGE = 0.5  # Pixels outside a part's outline that still get its colour (anti-aliasing).
_FAR = -1e6  # The depth of "nothing here".


def rotations(yaw, pitch, roll, mirror, back) -> np.ndarray:
  """Hand-frame to camera rotations [B, 3, 3]: mirrored for a left hand, turned to show the
  back of the hand where `back`, then yaw (about y), pitch (about x) and roll (in the picture)."""
  b = len(yaw)
  flip = np.zeros((b, 3, 3), np.float32)
  flip[:, 0, 0] = mirror * np.where(back, -1.0, 1.0)
  flip[:, 1, 1] = 1.0
  flip[:, 2, 2] = np.where(back, -1.0, 1.0)

  def about(axis, angle):
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros((b, 3, 3), np.float32)
    i, j = [k for k in range(3) if k != axis]
    m[:, axis, axis] = 1.0
    m[:, i, i], m[:, j, j], m[:, i, j], m[:, j, i] = c, c, -s, s
    return m

  # Yaw turns x towards -z for positive angles; the order of the products applies flip first.
  return about(2, roll) @ about(0, pitch) @ about(1, -yaw) @ flip


def to_camera(points, rotation, scale, offset):
  """Hand-frame points [B, ..., 3] to camera pixels: scale * R p + (offset_x, offset_y, 0)."""
  shape = points.shape
  flat = points.reshape(shape[0], -1, 3)
  moved = np.einsum('bij,bnj->bni', rotation, flat) * scale[:, None, None]
  moved[..., :2] += offset[:, None, :]
  return moved.reshape(shape).astype(np.float32)


class Buffers:
  """Per-pixel depth, normal (x, y), tone and redness of the nearest part, and coverage."""

  def __init__(self, batch: int, size: int):
    shape = (batch, size, size)
    self.size = size
    self.depth = np.full(shape, _FAR, np.float32)
    self.nx = np.zeros(shape, np.float32)
    self.ny = np.zeros(shape, np.float32)
    self.tone = np.ones(shape, np.float32)
    self.red = np.zeros(shape, np.float32)
    self.coverage = np.zeros(shape, np.float32)

  def window(self, lo, hi) -> 'Window':
    """The smallest window, the same size in every picture, that holds the boxes from `lo`
    to `hi` ([B, 2] camera pixels, y up) of all pictures."""
    return Window(self, lo, hi)

  def write(self, win, depth, edge, normal, material, blend=None):
    """Keeps a part's values, drawn in window `win`, where it is inside its outline and
    nearer than what is there. `edge` is each pixel's distance inside the outline (pixels):
    the half pixel outside it is drawn only over the background (anti-aliasing against the
    wall), not over other parts (their seams stay thin).

    With `blend` [B] (pixels of depth), surfaces that cross within that depth of each other
    mix their normals and materials instead of meeting in a sharp seam (a palm and its wrist).
    """
    names = ('depth', 'nx', 'ny', 'tone', 'red', 'coverage')
    old = dict(zip(names, (win.read(getattr(self, name)) for name in names)))
    inside = (edge > 0.0) | ((edge > -_FRINGE) & (old['depth'] < _FAR / 2))
    alpha = np.clip(edge + 0.5, 0.0, 1.0)
    tone, red = material
    new = {}
    if blend is None:
      won = inside & (depth > old['depth'])
      for name, value in zip(names[:5], (depth, normal[0], normal[1], tone, red)):
        new[name] = np.where(won, value, old[name])
    else:
      mix = np.clip(0.5 + (depth - old['depth']) / (2.0 * col_of(blend)), 0.0, 1.0) * inside
      keep = 1.0 - mix
      for name, value in zip(names[1:5], (normal[0], normal[1], tone, red)):
        new[name] = mix * value + keep * old[name]
      new['depth'] = np.where(inside & (depth > old['depth']), depth, old['depth'])
    new['coverage'] = np.maximum(old['coverage'], alpha)
    for name in names:
      win.write(getattr(self, name), new[name])


class Window:
  """A rectangle of the buffers at a per-picture position: pixel coordinates and indices."""

  def __init__(self, buf: Buffers, lo, hi):
    size = buf.size
    b = len(lo)
    width = min(size, int(np.ceil((hi[:, 0] - lo[:, 0]).max())) + 2)
    height = min(size, int(np.ceil((hi[:, 1] - lo[:, 1]).max())) + 2)
    col0 = np.clip(np.floor(lo[:, 0]).astype(np.int64), 0, size - width)
    row0 = np.clip(np.floor(size - hi[:, 1]).astype(np.int64), 0, size - height)
    cols = col0[:, None] + np.arange(width)
    rows = row0[:, None] + np.arange(height)
    self.px = (cols + 0.5).astype(np.float32)[:, None, :]
    self.py = (size - (rows + 0.5)).astype(np.float32)[:, :, None]  # y up.
    self.whole = width == size and height == size
    self.flat = (np.arange(b)[:, None, None] * size * size + rows[:, :, None] * size +
                 cols[:, None, :])

  def read(self, array):
    return array if self.whole else np.take(array, self.flat)

  def write(self, array, values):
    if self.whole:
      array[...] = values
    else:
      np.put(array, self.flat, values)


def draw_capsule(buf: Buffers, capsule, material, crease=0.0, flat=1.0):
  """Draws tapered capsules [B, 8] (camera pixels) with `material` (tone, redness; [B] each).

  The depth is the front-most point of the swept sphere along each pixel's ray, exact for an
  even radius: a bone pointing at the camera shows its near end. `crease` [B] darkens a line
  across the bone at its start (a joint's skin fold); `flat` < 1 flattens the cross-section
  in depth (a forearm is wider than it is deep).
  """
  reach_px = np.maximum(capsule[:, 6], capsule[:, 7])[:, None] + 1.0
  ends = capsule[:, [0, 1, 3, 4]].reshape(-1, 2, 2)
  win = buf.window(ends.min(axis=1) - reach_px, ends.max(axis=1) + reach_px)
  col = lambda k: capsule[:, k, None, None]
  ax, ay, az, bx, by, bz, ra, rb = (col(k) for k in range(8))
  dx, dy, dz = bx - ax, by - ay, bz - az
  k2 = dx * dx + dy * dy + 1e-6
  length3 = np.sqrt(k2 + dz * dz)
  wx, wy = win.px - ax, win.py - ay
  t0 = (wx * dx + wy * dy) / k2
  perp2 = wx * wx + wy * wy - t0 * t0 * k2
  r_mid = 0.5 * (ra + rb)
  # Along the bone towards the camera by as much as the sphere's cap allows.
  reach = np.sqrt(np.maximum(r_mid * r_mid - perp2, 0.0)) * (dz / (np.sqrt(k2) * length3))
  t = np.clip(t0 + reach, 0.0, 1.0)
  ex, ey = wx - t * dx, wy - t * dy
  d2 = ex * ex + ey * ey
  r = ra + t * (rb - ra)
  cap = np.sqrt(np.maximum(r * r - d2, 0.0))
  depth = az + t * dz + flat * cap
  edge = r - np.sqrt(d2)
  if flat == 1.0:
    inv_n = 1.0 / r
  else:  # The normal of z = flat * sqrt(r^2 - d^2): (flat * e, cap) / |.|.
    inv_n = flat / np.maximum(np.sqrt(flat * flat * d2 + cap * cap), 1e-6)
  tone, red = material
  fold = 1.0 - col_of(crease) * np.maximum(1.0 - t * 7.0, 0.0)
  buf.write(win, depth, edge, (ex * inv_n, ey * inv_n),
            (col_of(tone) * fold, col_of(red)))


def draw_ellipsoid(buf: Buffers, center, inverse_shape, material, blend, pattern=None):
  """Draws ellipsoids: centres [B, 3] and matrices A [B, 3, 3] of (x-c)^T A (x-c) <= 1,
  blending into what they cross within `blend` [B] pixels of depth. `pattern`, if given,
  maps the surface's camera coordinates (x, y, z) to a factor on the tone (skin lines)."""
  # The projected extent: the square roots of the diagonal of A's inverse.
  extent = np.sqrt(np.diagonal(np.linalg.inv(inverse_shape), axis1=1, axis2=2)[:, :2]) + 1.0
  win = buf.window(center[:, :2] - extent, center[:, :2] + extent)
  a = lambda i, j: inverse_shape[:, i, j, None, None]
  qx, qy = win.px - center[:, 0, None, None], win.py - center[:, 1, None, None]
  azz = a(2, 2)
  lx, ly = a(0, 2) / azz, a(1, 2) / azz
  g11, g12, g22 = a(0, 0) - a(0, 2) * lx, a(0, 1) - a(0, 2) * ly, a(1, 1) - a(1, 2) * ly
  g = g11 * qx * qx + (2.0 * g12) * qx * qy + g22 * qy * qy
  # The projected ellipse's smallest half-axis, in pixels, turns (1 - sqrt(g)) into pixels.
  half = (g11 + g22) / 2
  shortest = 1.0 / np.sqrt(half + np.sqrt((g11 - g22) ** 2 / 4 + g12 * g12))
  edge = (1.0 - np.sqrt(g)) * shortest
  h = np.sqrt(np.maximum(1.0 - g, 0.0) / azz)
  w = h - (lx * qx + ly * qy)  # Depth above the centre of the front surface.
  nx = a(0, 0) * qx + a(0, 1) * qy + a(0, 2) * w
  ny = a(0, 1) * qx + a(1, 1) * qy + a(1, 2) * w
  nz = azz * h
  inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-12)
  tone, red = material
  depth = center[:, 2, None, None] + w
  tone = col_of(tone) if pattern is None else col_of(tone) * pattern(win.px, win.py, depth)
  buf.write(win, depth, edge, (nx * inv, ny * inv), (tone, col_of(red)), blend)


def col_of(value):
  """A per-picture value [B] (or a constant) broadcast over the pixels."""
  value = np.asarray(value, np.float32)
  return value[:, None, None] if value.ndim else value


def draw_hands(pose: dict, view: dict, size: int) -> Buffers:
  """Rasterises posed hands (hand_pose.pose_hands) seen as `view` says.

  `view` holds rotation [B, 3, 3], scale [B] (pixels per palm half-width), offset [B, 2]
  (the wrist-frame origin in pixels), back [B] (the back of the hand faces the camera) and
  crease [B] (how dark the skin folds are).
  """
  rotation, scale, offset = view['rotation'], view['scale'], view['offset']
  b = len(scale)
  buf = Buffers(b, size)
  caps = pose['capsules']
  ends = to_camera(caps[..., :6].reshape(b, -1, 2, 3), rotation, scale, offset)
  radii = caps[..., 6:] * scale[:, None, None]
  cam = np.concatenate([ends.reshape(b, -1, 6), radii], axis=-1)
  back = view['back']
  palm_side = np.where(back, 0.0, 1.0).astype(np.float32)
  crease = view['crease']
  for k in range(hand_pose.NUM_CAPSULES):
    finger_bone = k >= 4 and (k - 4) % 3 > 0  # Middle and distal phalanges have folds.
    if k == 0:
      tone, red = 0.96 * np.ones(b, np.float32), np.zeros(b, np.float32)
    elif hand_pose.DISTAL[k]:
      # Fingertips are pinker on the palm's side; nails are lighter on the back.
      tone, red = np.where(back, 1.06, 1.0), 0.55 * palm_side
    else:
      tone, red = np.ones(b, np.float32), 0.15 * palm_side
    draw_capsule(buf, cam[:, k], (tone, red), crease if finger_bone else 0.0,
                 0.65 if k == 0 else 1.0)
  palm = pose['palm']
  centers = to_camera(palm[..., :3], rotation, scale, offset)
  # The palm's lines, on its body (the first ellipsoid), as dark as `crease` says.
  lines = _palm_lines(view, crease * palm_side * 1.5)
  for k in range(palm.shape[1]):
    half = palm[:, k, 3:] * scale[:, None]
    shape = np.einsum('bij,bj,bkj->bik', rotation, 1.0 / (half * half), rotation)
    draw_ellipsoid(buf, centers[:, k], shape, (np.where(back, 0.97, 1.03), 0.2 * palm_side),
                   0.12 * scale, lines if k == 0 else None)
  return buf


def _palm_lines(view: dict, strength):
  """A pattern for draw_ellipsoid: darkens the palm's three main lines (heart, head, life)
  by up to `strength` [B], each about a pixel wide."""
  rotation, scale, offset = view['rotation'], view['scale'], view['offset']

  def pattern(px, py, depth):
    # Back to the hand frame: p = R^T (x - offset) / scale; only x and y are needed.
    cx, cy = px - col_of(offset[:, 0]), py - col_of(offset[:, 1])
    r = lambda i, j: col_of(rotation[:, i, j] / scale)
    x = r(0, 0) * cx + r(1, 0) * cy + r(2, 0) * depth
    y = r(0, 1) * cx + r(1, 1) * cy + r(2, 1) * depth
    heart = np.where(x > -0.4, np.abs(y - 0.42 + 0.08 * x), 9.0)
    head = np.where(x < 0.6, np.abs(y - 0.12 + 0.2 * x), 9.0)
    life = np.where(x > -0.9, np.abs(np.sqrt((x + 1.1) ** 2 + (y + 0.75) ** 2) - 0.95), 9.0)
    nearest = np.minimum(np.minimum(heart, head), life) * col_of(scale)  # In pixels.
    return 1.0 - col_of(strength) * np.maximum(1.0 - nearest / 0.8, 0.0)

  return pattern


def shade_skin(buf: Buffers, skin, light: dict):
  """Colours [B, H, W, 3] of the drawn hands under `light`, on the [0, 1] scale.

  `skin` [B, 3] is the albedo; `light` holds direction [B, 3] (towards the light, camera
  frame), ambient [B], specular [B] and occlusion [B] (strength of the darkening where parts
  lie close in front of one another), all per picture.
  """
  # Normals turn at most to 70 degrees from the camera: a part's outermost pixel covers a
  # range of normals, not its grazing one alone (and outside a capsule's outline, in its
  # anti-aliased fringe, the normal's (x, y) is longer than 1).
  most = np.float32(np.sin(np.radians(70.0)))
  norm = np.maximum(np.sqrt(buf.nx * buf.nx + buf.ny * buf.ny) / most, 1.0)
  nx, ny = buf.nx / norm, buf.ny / norm
  nz = np.sqrt(np.maximum(1.0 - nx * nx - ny * ny, 0.0))
  lx, ly, lz = (col_of(light['direction'][:, k]) for k in range(3))
  cos_l = nx * lx + ny * ly + nz * lz
  diffuse = np.maximum(cos_l + 0.4, 0.0) / 1.4  # Wrapped: skin lets light round its edges.
  # Blinn-Phong towards the camera (0, 0, 1), the exponent 16 by squaring.
  hx, hy, hz = lx, ly, lz + 1.0
  inv = 1.0 / np.sqrt(hx * hx + hy * hy + hz * hz)
  spec = np.maximum(nx * hx * inv + ny * hy * inv + nz * hz * inv, 0.0)
  for _ in range(4):
    spec = spec * spec
  ambient = col_of(light['ambient'])
  shade = ambient + (1.0 - ambient) * diffuse
  shade *= 1.0 - col_of(light['occlusion']) * _occlusion(buf)
  # Light that enters skin leaves it redder: darker shading loses blue and green first.
  albedo = skin[:, None, None, :] * (buf.tone[..., None] * (
      1.0 + buf.red[..., None] * np.array([0.08, -0.05, -0.06], np.float32)))
  gamma = np.array([0.85, 1.0, 1.12], np.float32)
  colour = albedo * np.power(np.maximum(shade, 1e-3)[..., None], gamma)
  colour += (col_of(light['specular']) * spec)[..., None]
  return colour


def _occlusion(buf: Buffers) -> np.ndarray:
  """0..1 per pixel: how far the neighbourhood (about 2 px around) lies in front of it."""
  drawn = buf.depth > _FAR / 2
  floor = np.where(drawn, buf.depth, np.inf).min(axis=(1, 2), keepdims=True)
  floor = np.where(np.isfinite(floor), floor, 0.0)
  depth = np.where(drawn, buf.depth, floor)
  near = depth
  for axis in (1, 2, 1, 2):
    near = _binomial(near, axis)
  # Depth differences in pixels; a finger lying on the palm stands a few pixels above it.
  return np.clip((near - depth) / 4.0, 0.0, 1.0)


def _binomial(image, axis):
  """A [1, 2, 1] / 4 blur along `axis`, edges repeated."""
  first = image.take([0], axis)
  last = image.take([-1], axis)
  n = image.shape[axis]
  before = np.concatenate([first, image.take(np.arange(n - 1), axis)], axis)
  after = np.concatenate([image.take(np.arange(1, n), axis), last], axis)
  return 0.25 * (before + after) + 0.5 * image
