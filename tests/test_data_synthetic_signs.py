"""The synthetic SIGNS generator: the course's layout, balance, determinism, speed, pictures that
look like the course's photographs (a light warm wall, a hand of plausible size, the count shown
by raised digits), the cache name's version, the grid figure, and a hard task for a linear
model."""
import os
import time

import h5py
import numpy as np
import pytest

from experiments import signs_grid
from resnet_jax.data import (
  DatasetError,
  hand_pose,
  load_signs,
  load_signs_or_synthetic,
  make_synthetic_signs,
  synthetic_signs,
)
from resnet_jax.errors import ConfigError


@pytest.fixture(scope='module')
def default_set(tmp_path_factory):
  """The default set (1,080 + 120 pictures, seed 0) as the main job gets it (generated into a
  fresh cache), and the CPU seconds it took."""
  cache = tmp_path_factory.mktemp('cache')
  start = time.process_time()
  load_signs_or_synthetic(None, cache_dir=str(cache))
  return cache / f'synthetic_signs_v{synthetic_signs.GENERATOR_VERSION}_seed0', (
      time.process_time() - start)


@pytest.fixture(scope='module')
def rendered():
  """300 pictures (50 per class) with the hand's coverage of each pixel."""
  labels = np.repeat(np.arange(6), 50)
  images, coverage = synthetic_signs._render_chunk(labels, np.random.default_rng(5))
  return labels, images.astype(np.float32), coverage


def read(path):
  with h5py.File(path, 'r') as f:
    return {key: f[key][()] for key in f}


def test_the_default_set_is_generated_within_ten_cpu_seconds(default_set):
  # CPU time of this process (the generator is single-threaded numpy), not wall time: other
  # jobs on a shared machine stretch the wall clock, not the work.
  _, cpu_seconds = default_set
  assert cpu_seconds <= 10.0


def test_the_cache_is_named_by_the_generator_version(default_set):
  # Version 3 is the photographic generator: caches of earlier versions are not reused.
  assert synthetic_signs.GENERATOR_VERSION >= 3
  out_dir, _ = default_set
  assert out_dir.name == f'synthetic_signs_v{synthetic_signs.GENERATOR_VERSION}_seed0'
  assert sorted(os.listdir(out_dir)) == ['test_signs.h5', 'train_signs.h5']


def test_files_have_exactly_the_course_layout(default_set):
  out_dir, _ = default_set
  assert sorted(os.listdir(out_dir)) == ['test_signs.h5', 'train_signs.h5']  # No temp files left.
  for split, n in (('train', 1080), ('test', 120)):
    arrays = read(out_dir / f'{split}_signs.h5')
    assert sorted(arrays) == sorted([f'{split}_set_x', f'{split}_set_y', 'list_classes'])
    x, y = arrays[f'{split}_set_x'], arrays[f'{split}_set_y']
    assert x.dtype == np.uint8 and x.shape == (n, 64, 64, 3)
    assert y.dtype == np.int64 and y.shape == (n,)
    assert arrays['list_classes'].dtype == np.int64
    np.testing.assert_array_equal(arrays['list_classes'], np.arange(6))
    # Balanced: 180 train and 20 test pictures per class.
    np.testing.assert_array_equal(np.bincount(y, minlength=6), [n // 6] * 6)


def test_pictures_look_like_a_hand_on_a_light_warm_wall(default_set):
  out_dir, _ = default_set
  x = read(out_dir / 'train_signs.h5')['train_set_x'].astype(np.float32)
  # The top corners are mostly wall: light and warm (red above blue), as in the course's
  # photographs (about 228/222/212 there); most walls are near that, some are not.
  corners = np.concatenate([x[:, :4, :4], x[:, :4, -4:]], axis=1).mean(axis=(1, 2))
  brightness = corners.mean(axis=1)
  assert 190 < np.median(brightness) < 240
  assert np.mean(brightness > 160) > 0.8
  warmth = corners[:, 0] - corners[:, 2]
  assert 3 < np.median(warmth) < 30
  # The whole picture's mean is near the photographs' (about 195/181/169): wall and skin.
  mean = x.mean(axis=(0, 1, 2))
  assert 165 < mean[0] < 225 and mean[0] > mean[1] > mean[2]
  # The bottom rows hold the forearm: darker than the wall.
  assert np.median(x[:, -3:].mean(axis=(1, 2, 3))) < np.median(brightness) - 10
  # Pictures differ from one another and use a wide range of values.
  assert x.std(axis=0).mean() > 20
  assert x.min() < 40 and x.max() > 230


def test_the_hand_fills_a_plausible_part_of_the_picture(rendered):
  labels, images, coverage = rendered
  covered = coverage.mean(axis=(1, 2))
  # Hand and forearm cover about a quarter to a half of a photograph; never nothing, never
  # everything.
  assert 0.15 < np.median(covered) < 0.45
  assert covered.min() > 0.04 and covered.max() < 0.8
  # An open hand covers more than a closed one.
  assert np.median(covered[labels == 5]) > np.median(covered[labels == 0])
  # Skin is darker and redder than the wall around it.
  hand = coverage > 0.99
  wall = coverage < 0.01
  for i in range(0, len(labels), 25):
    skin, bare = images[i][hand[i]].mean(0), images[i][wall[i]].mean(0)
    assert skin.mean() < bare.mean()
    assert skin[0] - skin[2] > bare[0] - bare[2]


def test_fingers_are_thin_and_the_palm_is_shaded():
  # One open hand, large and straight, lit from the front: a raised finger is a few pixels
  # wide (as in the photographs at 64 px), and the shading varies across the hand.
  rng = np.random.default_rng(0)
  labels = np.array([5] * 8)
  images, coverage = synthetic_signs._render_chunk(labels, rng)
  widths = []
  for picture in coverage:
    rows = picture[:20]  # Fingers, above the palm.
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, row > 0.5, 0]))) for row in rows]
    widths += [w for run in runs for w in run[::2]]
  assert 2 <= np.median(widths) <= 7
  hand = coverage > 0.99
  spread = [images[i][hand[i]].astype(np.float32).std(0).mean() for i in range(8)]
  assert np.median(spread) > 6


def test_the_label_is_the_number_of_extended_digits_the_thumb_included():
  labels = np.repeat(np.arange(6), 200)
  extended = hand_pose.extended_digits(labels, np.random.default_rng(0))
  np.testing.assert_array_equal(extended.sum(axis=1), labels)
  thumb, index, little = extended[:, 0], extended[:, 1], extended[:, 4]
  # The course's signs: one is the index finger, five the open hand, four without the thumb.
  assert index[labels == 1].all() and not thumb[labels == 1].any()
  assert extended[labels == 5].all()
  assert little[labels == 4].all() and not thumb[labels == 4].any()
  # Some threes use the thumb (about 30%), the others index, middle and ring.
  assert 0.2 < thumb[labels == 3].mean() < 0.4


def test_the_posed_hand_raises_as_many_digits_as_its_label():
  labels = np.repeat(np.arange(6), 100)
  pose = hand_pose.pose_hands(labels, np.random.default_rng(1))
  bones = pose['capsules']
  # A finger is raised when its tip stands well above its knuckle (hand units: palm
  # half-widths); a folded one curls forwards (z > 0), its tip no higher than its knuckle
  # (a zero's O, a little above it).
  knuckle_y = bones[:, 4::3, 1]
  tip = bones[:, 6::3, 3:6]
  raised = tip[..., 1] > knuckle_y + 0.6
  np.testing.assert_array_equal(raised, pose['extended'][:, 1:])
  folded = ~pose['extended'][:, 1:]
  assert (tip[..., 2][folded] > 0.1).all()
  assert (tip[..., 1][folded] < knuckle_y[folded] + 0.4).all()
  # The thumb sticks out sideways when raised; otherwise it stays over the palm.
  thumb_tip = bones[:, 3, 3:6]
  out = thumb_tip[:, 0] < -1.0
  np.testing.assert_array_equal(out, pose['extended'][:, 0])
  # A zero is an O: the thumb's tip meets the index and middle fingertips.
  zero = labels == 0
  meet = np.linalg.norm(thumb_tip[zero] - tip[zero, :2].mean(axis=1), axis=-1)
  assert np.median(meet) < 0.3


def test_same_seed_same_files_other_seed_other_pictures(tmp_path):
  a = make_synthetic_signs(str(tmp_path / 'a'), num_train=36, num_test=12, seed=3)
  b = make_synthetic_signs(str(tmp_path / 'b'), num_train=36, num_test=12, seed=3)
  c = make_synthetic_signs(str(tmp_path / 'c'), num_train=36, num_test=12, seed=4)
  for pa, pb, pc in zip(a, b, c):
    da, db, dc = read(pa), read(pb), read(pc)
    for key in da:
      np.testing.assert_array_equal(da[key], db[key])
    x_key = [k for k in da if k.endswith('_x')][0]
    differing = np.mean(da[x_key] != dc[x_key])
    assert differing > 0.5


def test_counts_that_do_not_divide_by_six_stay_balanced(tmp_path):
  train, test = make_synthetic_signs(str(tmp_path), num_train=20, num_test=7, seed=1)
  counts = np.bincount(read(train)['train_set_y'], minlength=6)
  assert counts.sum() == 20 and counts.max() - counts.min() <= 1
  assert read(test)['test_set_x'].shape == (7, 64, 64, 3)


def test_refuses_to_overwrite_unless_asked(tmp_path):
  paths = make_synthetic_signs(str(tmp_path), num_train=6, num_test=6, seed=0)
  before = [open(p, 'rb').read() for p in paths]
  with pytest.raises(DatasetError, match='refusing to overwrite') as error:
    make_synthetic_signs(str(tmp_path), num_train=12, num_test=6, seed=1)
  assert 'train_signs.h5' in str(error.value)
  assert [open(p, 'rb').read() for p in paths] == before
  make_synthetic_signs(str(tmp_path), num_train=12, num_test=6, seed=1, overwrite=True)
  assert read(paths[0])['train_set_x'].shape[0] == 12


def test_a_failed_generation_leaves_no_files(tmp_path, monkeypatch):
  real_render = synthetic_signs.render_signs
  calls = []

  def render_then_fail(num, rng):
    calls.append(num)
    if len(calls) == 2:  # The test split, after the train file was written.
      raise RuntimeError('simulated failure')
    return real_render(num, rng)

  monkeypatch.setattr(synthetic_signs, 'render_signs', render_then_fail)
  with pytest.raises(RuntimeError, match='simulated failure'):
    make_synthetic_signs(str(tmp_path), num_train=6, num_test=6)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('field, value', [('num_train', 0), ('num_test', -3), ('num_train', 2.5)])
def test_bad_sizes_are_config_errors(tmp_path, field, value):
  with pytest.raises(ConfigError, match=field):
    make_synthetic_signs(str(tmp_path), **{field: value})


def test_the_grid_figure_has_a_column_per_class(tmp_path, capsys):
  out = tmp_path / 'grid.png'
  assert signs_grid.main(['--out', str(out), '--per_class', '2', '--zoom', '1']) == 0
  from PIL import Image
  with Image.open(out) as figure:
    assert figure.size == (6 * (64 + 4) + 4, 20 + 2 * (64 + 4) + 4)
  assert 'wrote' in capsys.readouterr().out
  # A directory that does not exist is bad input: one error line, exit code 2, no file.
  missing = tmp_path / 'no' / 'grid.png'
  assert signs_grid.main(['--out', str(missing)]) == 2
  assert 'error:' in capsys.readouterr().err and not missing.exists()


def test_load_signs_reads_the_generated_files(default_set):
  out_dir, _ = default_set
  data = load_signs(str(out_dir))
  raw = read(out_dir / 'train_signs.h5')
  np.testing.assert_array_equal(data.train.images, raw['train_set_x'])
  np.testing.assert_array_equal(data.train.labels, raw['train_set_y'])
  assert data.class_names == tuple('012345')


@pytest.mark.slow  # Fits a logistic regression.
def test_a_linear_probe_on_raw_pixels_stays_below_sixty_percent(default_set):
  # Logistic regression on standardised raw pixels, fit on train, scored on test, run to
  # convergence: the pictures must not be separable by a template.
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  from threadpoolctl import threadpool_limits
  data = load_signs(str(default_set[0]))
  flat = lambda split: split.images.reshape(len(split), -1).astype(np.float32)
  scaler = StandardScaler().fit(flat(data.train))
  train_x, test_x = scaler.transform(flat(data.train)), scaler.transform(flat(data.test))
  # One BLAS thread: several threads on a loaded machine make this slower, not faster.
  with threadpool_limits(limits=1):
    probe = LogisticRegression(max_iter=1000).fit(train_x, data.train.labels)
  assert probe.n_iter_[0] < 1000  # Converged: the probe is not held back.
  assert probe.score(train_x, data.train.labels) > 0.95  # It can fit; it cannot generalise.
  accuracy = probe.score(test_x, data.test.labels)
  assert accuracy < 0.6, accuracy
