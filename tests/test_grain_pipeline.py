"""The streaming pipeline: its position is the step, processes read disjoint parts that make
up the one-process batch, evaluation counts every example once, the host augmentations
match their definitions, and bad shards are named."""
import io
import os

import _image_data
import numpy as np
import pytest
from PIL import Image

import helpers
from resnet_jax.data import grain_pipeline, host_augment, image_records, streamed
from resnet_jax.errors import DatasetError

NUM_TRAIN, NUM_VAL, SIZE = 40, 11, 8
AUGMENT = grain_pipeline.Augmentation(inception_crop=True, flip=True)


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  return _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), NUM_TRAIN, NUM_VAL)


@pytest.fixture(scope='module')
def dataset(shards):
  return streamed.open_images(shards, SIZE)


def _layout(devices, per_device=2, global_batch=8):
  return grain_pipeline.BatchLayout(global_batch, tuple(devices), per_device)


def _train_batches(dataset, layout, start, num_steps, per_epoch=5, augmentation=AUGMENT):
  data = grain_pipeline.train_dataset(dataset.train.source, layout, per_epoch, 3, SIZE,
                                      augmentation, start, num_steps)
  return list(grain_pipeline.iterate(data, len(layout.device_indices)))


def test_a_pipeline_started_at_step_s_gives_the_batches_of_an_unbroken_one(dataset):
  layout = _layout(range(4))
  unbroken = _train_batches(dataset, layout, 0, 12)  # Crosses two epoch ends (5 per epoch).
  resumed = _train_batches(dataset, layout, 7, 5)
  assert len(unbroken) == 12 and unbroken[0]['image'].shape == (4, 2, SIZE, SIZE, 3)
  for a, b in zip(unbroken[7:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Each epoch visits distinct examples in a new order; labels are those of the records.
  order0, order1 = (grain_pipeline.epoch_order(3, e, NUM_TRAIN) for e in (0, 1))
  assert sorted(order0) == list(range(NUM_TRAIN)) and not np.array_equal(order0, order1)
  labels = np.concatenate([b['label'].ravel() for b in unbroken[:5]])
  np.testing.assert_array_equal(labels, [i % 3 for i in order0[:40]])


def test_processes_read_disjoint_parts_that_make_up_the_one_process_batch(dataset):
  whole = _train_batches(dataset, _layout(range(4)), 0, 3)
  parts = [_train_batches(dataset, _layout(devices), 0, 3) for devices in ((0, 1), (2, 3))]
  for step, batch in enumerate(whole):
    joined = {k: np.concatenate([p[step][k] for p in parts]) for k in batch}
    for key in batch:
      np.testing.assert_array_equal(joined[key], batch[key])
    np.testing.assert_array_equal(parts[1][step]['example_id'].ravel(), np.arange(4, 8))


def test_evaluation_counts_every_example_once_with_the_last_batch_masked(dataset):
  layout = _layout(range(2), per_device=3, global_batch=6)
  data = grain_pipeline.eval_dataset(dataset.test.source, layout, SIZE)
  batches = list(grain_pipeline.iterate(data, 2))
  assert len(batches) == 2  # 11 examples in batches of 6.
  masks = np.concatenate([b['mask'].ravel() for b in batches])
  labels = np.concatenate([b['label'].ravel() for b in batches])
  np.testing.assert_array_equal(masks, [1] * NUM_VAL + [0])
  np.testing.assert_array_equal(labels[:NUM_VAL], [i % 3 for i in range(NUM_VAL)])
  # The evaluation view is deterministic: the same pixels every time.
  again = list(grain_pipeline.iterate(data, 2))
  np.testing.assert_array_equal(batches[1]['image'], again[1]['image'])


def test_inception_crop_boxes_stay_inside_with_the_allowed_area_and_aspect():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(2000):
    left, top, right, bottom = host_augment.crop_box(rng, 320, 240)
    assert 0 <= left < right <= 320 and 0 <= top < bottom <= 240
    areas.append((right - left) * (bottom - top) / (320 * 240))
    ratios.append((right - left) / (bottom - top))
  assert 0.07 < min(areas) < 0.12 and max(areas) > 0.9
  assert min(ratios) > 0.74 and max(ratios) < 1.35
  # A strip far outside the aspect range falls back to its largest central allowed box.
  assert host_augment.crop_box(np.random.default_rng(0), 1000, 10) == (493, 0, 506, 10)


def test_center_crop_keeps_the_central_87_5_percent_of_the_shorter_side():
  image = np.zeros((64, 128, 3), np.uint8)
  image[4:60, 36:92] = 255  # The central 56x56 of 64 rows: exactly the crop for size 56.
  out = host_augment.center_crop(Image.fromarray(image), 56)
  assert out.shape == (56, 56, 3)
  assert out.min() == 255


def test_pad_crop_and_flip_match_their_definition():
  pixels = np.random.default_rng(0).integers(0, 255, (6, 6, 3)).astype(np.uint8)
  image = Image.fromarray(pixels)
  for seed in range(10):
    out = host_augment.resize_pad_crop(image, np.random.default_rng(seed), 6, 2, flip=True)
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 5, size=2)
    expected = np.pad(pixels, ((2, 2), (2, 2), (0, 0)))[top:top + 6, left:left + 6]
    if rng.random() < 0.5:
      expected = expected[:, ::-1]
    np.testing.assert_array_equal(out, expected)


def test_a_missing_truncated_or_foreign_shard_is_named(shards, tmp_path):
  import shutil
  copy = str(tmp_path / 'copy')
  shutil.copytree(shards, copy)
  index = image_records.read_index(copy)
  second = os.path.join(copy, index.splits['train'].shards[1])
  os.replace(second, second + '.moved')
  with pytest.raises(DatasetError, match=f'{second}: no such shard'):
    streamed.open_images(copy, SIZE)
  foreign = os.path.join(copy, index.splits['val'].shards[0])
  shutil.copy(foreign, second)  # Another split's shard (5 records) where this one belongs.
  with pytest.raises(DatasetError, match=f'{second}: 5 records; expected 20'):
    streamed.open_images(copy, SIZE)
  with open(second + '.moved', 'rb') as f:
    data = f.read()
  with open(second, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(DatasetError, match=second):
    streamed.open_images(copy, SIZE)


def test_an_undecodable_record_is_named(tmp_path):
  out = str(tmp_path / 'bad')
  _image_data.make_shards(out, 4, 2, shards_per_split=1)
  index = image_records.read_index(out)
  path = os.path.join(out, index.splits['train'].shards[0])
  good = io.BytesIO()
  Image.new('RGB', (4, 4)).save(good, format='PNG')
  image_records.write_shard(path, [image_records.encode_record(0, good.getvalue())] * 3
                            + [image_records.encode_record(1, b'not an image')])
  source = streamed.open_images(out, SIZE).train.source
  assert grain_pipeline.decode(source, 0)[0] == 0
  with pytest.raises(DatasetError, match=r'record 3 of the shards .*not an image'):
    grain_pipeline.decode(source, 3)


def test_streamed_configs_refuse_what_needs_the_whole_split():
  from resnet_jax.errors import ConfigError
  from resnet_jax.train import config as config_lib

  def config(**fields):
    return helpers.apply_overrides(config_lib.base_config(), fields)

  config_lib.validate_config(config(**{'data.name': 'images',
                                        'data.augment.inception_crop': True}))
  for fields, named in (({'data.name': 'images', 'data.preprocess': 'standardize'},
                         'data.preprocess'),
                        ({'data.name': 'images', 'train.bn_recompute_batches': 2},
                         'train.bn_recompute_batches'),
                        ({'data.augment.inception_crop': True}, 'data.augment.inception_crop'),
                        ({'speed.data_workers': -1}, 'speed.data_workers')):
    with pytest.raises(ConfigError, match=f'config.{named}'):
      config_lib.validate_config(config(**fields))


def test_a_folder_without_images_or_with_one_class_is_refused(tmp_path):
  with pytest.raises(DatasetError, match='no such directory'):
    streamed.open_images(str(tmp_path / 'missing'), SIZE)
  (tmp_path / 'one' / 'cats').mkdir(parents=True)
  Image.new('RGB', (4, 4)).save(tmp_path / 'one' / 'cats' / 'a.jpg')
  with pytest.raises(DatasetError, match='one'):
    streamed.open_images(str(tmp_path / 'one'), SIZE)
