"""The Inception crop's resize on the device (box_resize) against the host path it replaces:
the pixels of Pillow's `Image.resize(size, BILINEAR, box=...)` (what
augment.random_resized_crop does) within two grey levels (`assert_like_pillow`), the
same batches from the pipeline with the same resume and multi-process properties, the
train step fed canvases, and the configuration that chooses where the resize runs."""
import functools

import _image_data
import jax
import numpy as np
import pytest
from PIL import Image

import helpers as fx
from resnet_jax.data import augment, image_files, images as images_lib, pipeline
from resnet_jax.data.augment import Augmentation
from resnet_jax.data.layout import BatchLayout
from resnet_jax.perf import input_throughput
from resnet_jax.train import box_resize, devices as devices_lib, setup, steps
from resnet_jax.train.state import create_train_state

SIZE = 8
HOST = Augmentation(inception_crop=True, flip=True)


def assert_like_pillow(resized, pillow, differing=0.25):
  """The tolerance: no pixel off by more than 2 grey levels, and at most `differing` of them
  off at all. box_resize sums in float32 where Pillow sums 22-bit integers (a value within
  about 1e-5 of a half may round the other way, in each pass), and Pillow 13 runs the
  vertical pass first for some boxes (rounding its intermediate image differently)."""
  difference = np.abs(resized.astype(np.int32) - pillow.astype(np.int32))
  assert difference.max() <= 2 and np.mean(difference > 0) < differing, (
      difference.max(), np.mean(difference > 0))


def _resize(canvases, boxes, size):
  return np.asarray(jax.jit(box_resize.resize_boxes, static_argnums=2)(canvases, boxes, size))


def _photos(tmp_path, count):
  """Photo-like JPEGs as benchmark.py --input_only stores them (341x256), every other one
  turned upright (256x341), decoded as the pipeline decodes them."""
  source = images_lib.open_images(input_throughput.write_benchmark_shards(
      str(tmp_path / 'photos'), count)).train
  images = [image_files.decode_rgb_image(source[i][1]) for i in range(count)]
  return [im.transpose(Image.Transpose.ROTATE_90) if i % 2 else im
          for i, im in enumerate(images)]


@pytest.mark.parametrize('size', [224, 40, 300])  # Shrinking, shrinking a lot, enlarging.
def test_the_device_resize_matches_pillows_box_resize(tmp_path, size):
  images = _photos(tmp_path, 6)
  side = augment.canvas_size(256, size)
  canvases = np.zeros((len(images) * 4, side, side, 3), np.uint8)
  boxes, expected = [], []
  for k in range(len(canvases)):
    image = images[k % len(images)]
    boxes.append(augment.crop_to_canvas(image, np.random.default_rng(k), size,
                                             canvases[k]))
    expected.append(augment.random_resized_crop(image, np.random.default_rng(k), size,
                                                     flip=True))
  # The host path is Pillow's box resize, antialiased, without reducing_gap's shortcut.
  box = augment.crop_box(np.random.default_rng(0), *images[0].size)
  pillow = images[0].resize((size, size), Image.BILINEAR, box=box, reducing_gap=None)
  np.testing.assert_array_equal(augment.random_resized_crop(
      images[0], np.random.default_rng(0), size, flip=False), np.asarray(pillow))
  assert {b[-1] for b in boxes} == {0, 1}  # Both sides of the flip.
  resized = _resize(canvases, box_resize.box_array(boxes), size)
  assert_like_pillow(resized, np.stack(expected))
  # Landscape pictures (every other one), which Pillow resizes horizontal pass first here,
  # differ only where float32 rounds a near-half the other way.
  landscape = [k for k in range(len(canvases)) if k % len(images) % 2 == 0]
  assert_like_pillow(resized[landscape], np.stack(expected)[landscape], differing=0.01)


def test_a_box_larger_than_the_canvas_is_resized_on_the_host():
  image = _image_data.picture(np.random.default_rng(0), 'red').resize((90, 70))
  side = augment.canvas_size(16, SIZE)  # An index saying 16 px; this image is larger.
  canvas = np.zeros((side, side, 3), np.uint8)
  box = augment.crop_to_canvas(image, np.random.default_rng(3), SIZE, canvas)
  assert box[:6] == (0, 0, SIZE, SIZE, SIZE, SIZE)
  expected = augment.random_resized_crop(image, np.random.default_rng(3), SIZE, True)
  np.testing.assert_array_equal(_resize(canvas[None], box_resize.box_array([box]), SIZE)[0],
                                expected)  # Resized once, on the host; copied on the device.


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  shards = _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), 40, 4)
  return images_lib.open_images(shards).train


def _batches(source, devices, start, num_steps, augmentation):
  layout = BatchLayout(8, tuple(devices), 2)
  data = pipeline.train_dataset(source, layout, pipeline.Recipe(SIZE, augmentation, seed=3),
                                start, num_steps)
  return list(pipeline.iterate(data, len(devices)))


@pytest.mark.parametrize('max_size', [256, 24])  # 24: most pictures larger than it says.
def test_pipeline_batches_on_canvases_resize_to_the_host_batches(source, max_size):
  on_device = Augmentation(inception_crop=True, flip=True,
                           canvas_size=augment.canvas_size(max_size, SIZE))
  host = _batches(source, range(4), 0, 7, HOST)
  canvases = _batches(source, range(4), 0, 7, on_device)
  assert len(host) == len(canvases) == 7
  for a, b in zip(host, canvases, strict=True):
    assert a.keys() == {'image', 'label'} and b.keys() == {'image', 'label', 'box'}
    assert b['image'].shape == (4, 2) + on_device.image_shape(SIZE)
    resized = _resize(b['image'].reshape((8,) + b['image'].shape[2:]),
                      b['box'].reshape(8, -1), SIZE)
    assert_like_pillow(resized.reshape(a['image'].shape), a['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # Started at step 4, or read by two processes: the same batches.
  resumed = _batches(source, range(4), 4, 3, on_device)
  parts = [_batches(source, devices, 0, 7, on_device) for devices in ((0, 1), (2, 3))]
  assert len(resumed) == 3 and all(len(p) == 7 for p in parts)
  for step, batch in enumerate(canvases):
    for key in batch:
      if step >= 4:
        np.testing.assert_array_equal(resumed[step - 4][key], batch[key])
      np.testing.assert_array_equal(np.concatenate([p[step][key] for p in parts]), batch[key])


@pytest.mark.slow  # Compiles two training steps.
def test_a_train_step_fed_canvases_resizes_them_to_image_size_first(source):
  model, devices = fx.TinyNet(), jax.local_devices()[:1]
  tx, _ = fx.create_optimizer(fx.tiny_config(), steps_per_epoch=10)
  state = devices_lib.replicate_on_devices(
      jax.tree.map(np.asarray, create_train_state(model, tx, (SIZE, SIZE, 3), seed=0)), devices)
  settings = steps.StepSettings(num_classes=3, image_size=SIZE)
  step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx, settings=settings),
                  axis_name='batch', devices=devices)
  on_device = Augmentation(inception_crop=True, flip=True,
                           canvas_size=augment.canvas_size(256, SIZE))
  canvases = {k: v.reshape((1, 8) + v.shape[2:])
              for k, v in _batches(source, range(4), 0, 1, on_device)[0].items()}
  resized = dict(canvases, image=_resize(canvases['image'][0], canvases['box'][0], SIZE)[None])
  del resized['box']
  new_fed, metrics_fed = step(state, canvases)
  new_resized, metrics_resized = step(state, resized)
  assert float(metrics_fed['loss'][0]) == float(metrics_resized['loss'][0])
  for a, b in zip(jax.tree.leaves(new_fed.params), jax.tree.leaves(new_resized.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_crop_resize_chooses_the_canvas_only_for_inception_crops_of_prepared_data():
  config = fx.tiny_config(**{'data.name': 'images', 'data.image_size': 224})
  config.data.augment.inception_crop = True
  config.speed.crop_resize = 'device'
  canvas = lambda max_size: setup.input_recipe(config, max_size).augmentation.canvas_size
  assert canvas(256) == augment.canvas_size(256, 224)
  assert canvas(None) == 0  # A raw folder: any size.
  config.speed.crop_resize = 'host'
  assert canvas(256) == 0
  config.speed.crop_resize = 'auto'  # The device, except on CPU backends.
  assert (canvas(256) > 0) == (jax.default_backend() != 'cpu')
  config.data.augment.inception_crop, config.speed.crop_resize = False, 'device'
  assert canvas(256) == 0  # Pad-and-crop: no resize.
  # Canvases hold any box of a 256-px image with its margin: 4/3 x 256, rounded, + 2 x 2.
  assert augment.canvas_size(256, 224) == 343 + 4
