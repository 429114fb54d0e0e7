"""The one input pipeline: its position is the step, processes read disjoint parts that make
up the one-process batch, evaluation counts every example once on the view training sees,
augmentation changes with (epoch, example) and nothing else, arrays and files of the same
pictures give the same batches, and bad shards are named."""
import io
import os
import shutil

import _image_data
import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import augment, image_records, images, pipeline
from resnet_jax.data.augment import Augmentation
from resnet_jax.data.layout import BatchLayout
from resnet_jax.data.types import Dataset, Split
from resnet_jax.errors import DatasetError

NUM_TRAIN, NUM_VAL, SIZE = 40, 11, 8
INCEPTION = pipeline.Recipe(SIZE, Augmentation(inception_crop=True, flip=True), seed=3)
SMALL = pipeline.Recipe(SIZE, Augmentation(crop_padding=2, flip=True), seed=3)


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  return _image_data.make_shards(str(tmp_path_factory.mktemp('shards')), NUM_TRAIN, NUM_VAL)


@pytest.fixture(scope='module')
def dataset(shards):
  return images.open_images(shards)


def _layout(devices, per_device=2, global_batch=8):
  return BatchLayout(global_batch, tuple(devices), per_device)


def _train_batches(source, layout, start, num_steps, recipe=INCEPTION, workers=0):
  data = pipeline.train_dataset(source, layout, recipe, start, num_steps)
  return list(pipeline.iterate(data, layout.local_devices, workers))


def _arrays(n=NUM_TRAIN, size=SIZE, seed=0):
  rng = np.random.default_rng(seed)
  return Split(rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8),
               (np.arange(n) % 3).astype(np.int32))


def test_a_pipeline_started_at_step_s_gives_the_batches_of_an_unbroken_one(dataset):
  layout = _layout(range(4))
  unbroken = _train_batches(dataset.train, layout, 0, 12)  # Crosses two epoch ends (5 each).
  resumed = _train_batches(dataset.train, layout, 7, 5)
  assert len(unbroken) == 12 and len(resumed) == 5
  assert unbroken[0]['image'].shape == (4, 2, SIZE, SIZE, 3)
  for a, b in zip(unbroken[7:], resumed, strict=True):
    assert a.keys() == b.keys() == {'image', 'label'}
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Each epoch visits distinct examples in a new order; labels are those of the records.
  order0, order1 = (pipeline.epoch_order(3, e, NUM_TRAIN) for e in (0, 1))
  assert sorted(order0) == list(range(NUM_TRAIN)) and not np.array_equal(order0, order1)
  labels = np.concatenate([b['label'].ravel() for b in unbroken[:5]])
  np.testing.assert_array_equal(labels, [i % 3 for i in order0[:40]])


def test_the_order_is_a_function_of_seed_and_epoch_alone():
  np.testing.assert_array_equal(pipeline.epoch_order(5, 2, 30), pipeline.epoch_order(5, 2, 30))
  assert not np.array_equal(pipeline.epoch_order(5, 2, 30), pipeline.epoch_order(6, 2, 30))
  statistics = pipeline.epoch_order(5, 0, 30, pipeline.STATISTICS_ORDER)
  assert not np.array_equal(statistics, pipeline.epoch_order(5, 0, 30))


def test_processes_read_disjoint_parts_that_make_up_the_one_process_batch(dataset):
  whole = _train_batches(dataset.train, _layout(range(4)), 0, 3)
  parts = [_train_batches(dataset.train, _layout(devices), 0, 3) for devices in ((0, 1), (2, 3))]
  assert len(whole) == 3 and all(len(p) == 3 for p in parts)
  for step, batch in enumerate(whole):
    for key in batch:
      joined = np.concatenate([p[step][key] for p in parts])
      np.testing.assert_array_equal(joined, batch[key])


def test_the_same_example_is_augmented_alike_at_the_same_epoch_and_unlike_at_another():
  split = _arrays(n=16)
  layout = _layout([0], per_device=16, global_batch=16)  # One step per epoch: all 16.
  epochs = _train_batches(split, layout, 0, 3, recipe=SMALL)
  again = _train_batches(split, layout, 1, 1, recipe=SMALL)
  np.testing.assert_array_equal(epochs[1]['image'], again[0]['image'])

  def by_example(batch, epoch):
    order = pipeline.epoch_order(SMALL.seed, epoch, 16)
    return {int(i): img for i, img in zip(order, batch['image'][0])}

  views = [by_example(batch, epoch) for epoch, batch in enumerate(epochs)]
  differing = sum(not np.array_equal(views[0][i], views[1][i]) for i in range(16))
  assert differing >= 12  # 25 crop offsets x 2 flips: a repeat is rare.
  # Each is the definition applied with the example's own generator for that epoch.
  for epoch in (0, 2):
    for index in (0, 7):
      expected = augment.resize_pad_crop(split.images[index],
                                         pipeline.example_rng(SMALL.seed, epoch, index), SIZE,
                                         2, flip=True)
      np.testing.assert_array_equal(views[epoch][index], expected)


def test_the_same_pictures_as_arrays_and_as_a_png_folder_give_identical_batches(tmp_path):
  arrays = {'train': _arrays(n=24, size=12, seed=1), 'val': _arrays(n=9, size=12, seed=2)}
  for split, data in arrays.items():
    for i, (label, image) in enumerate(zip(data.labels, data.images)):
      folder = tmp_path / split / f'class{label}'
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(folder / f'{i:03d}.png')
  from_files = images.open_images(str(tmp_path))
  # The folder lists by class, then by name: the arrays in that order are the same records.
  order = {s: np.argsort(arrays[s].labels, kind='stable') for s in arrays}
  in_memory = Dataset(Split(arrays['train'].images[order['train']],
                            arrays['train'].labels[order['train']]),
                      Split(arrays['val'].images[order['val']], arrays['val'].labels[order['val']]),
                      from_files.class_names, 'arrays')
  layout = _layout(range(2), per_device=4, global_batch=8)
  for recipe in (pipeline.Recipe(10, Augmentation(crop_padding=2, flip=True), seed=1),
                 pipeline.Recipe(10, Augmentation(inception_crop=True, flip=True), seed=1)):
    a = _train_batches(in_memory.train, layout, 2, 4, recipe)
    b = _train_batches(from_files.train, layout, 2, 4, recipe)
    ea = list(pipeline.iterate(pipeline.eval_dataset(in_memory.test, layout, recipe), 2))
    eb = list(pipeline.iterate(pipeline.eval_dataset(from_files.test, layout, recipe), 2))
    for x, y in zip(a + ea, b + eb, strict=True):
      for key in x:
        np.testing.assert_array_equal(x[key], y[key])


def test_evaluation_counts_every_example_once_with_the_last_batch_masked(dataset):
  layout = _layout(range(2), per_device=3, global_batch=6)
  data = pipeline.eval_dataset(dataset.test, layout, INCEPTION)
  batches = list(pipeline.iterate(data, 2))
  assert len(batches) == 2  # 11 examples in batches of 6.
  masks = np.concatenate([b['mask'].ravel() for b in batches])
  labels = np.concatenate([b['label'].ravel() for b in batches])
  np.testing.assert_array_equal(masks, [1] * NUM_VAL + [0])
  np.testing.assert_array_equal(labels[:NUM_VAL], [i % 3 for i in range(NUM_VAL)])
  again = list(pipeline.iterate(data, 2))
  np.testing.assert_array_equal(batches[1]['image'], again[1]['image'])


@pytest.mark.parametrize('recipe, view', [(SMALL, 'resize_square'), (INCEPTION, 'center_crop')])
def test_evaluation_sees_the_view_its_training_recipe_trains_on(recipe, view):
  """The small pictures' recipe resizes the whole picture to size x size, so it is scored on
  that; Inception crops are scored on the centre crop."""
  rng = np.random.default_rng(0)
  picture = rng.integers(0, 256, (30, 20, 3)).astype(np.uint8)  # Not square: views differ.
  expected = getattr(augment, view)(picture, SIZE)
  assert recipe.augmentation.eval_view(picture, SIZE).shape == (SIZE, SIZE, 3)
  np.testing.assert_array_equal(recipe.augmentation.eval_view(picture, SIZE), expected)
  other = 'center_crop' if view == 'resize_square' else 'resize_square'
  assert not np.array_equal(expected, getattr(augment, other)(picture, SIZE))
  # The training view without padding or flips is the evaluation view exactly.
  plain = Augmentation()
  out = np.zeros((SIZE, SIZE, 3), np.uint8)
  plain.train_view(picture, np.random.default_rng(1), SIZE, out)
  np.testing.assert_array_equal(out, plain.eval_view(picture, SIZE))


def test_statistics_batches_are_unaugmented_and_the_same_each_time():
  split = _arrays(n=16)
  layout = _layout([0], per_device=8, global_batch=8)
  first, second = (list(pipeline.iterate(pipeline.statistics_dataset(split, layout, SMALL, 3), 1))
                   for _ in range(2))
  assert len(first) == len(second) == 3
  order = pipeline.epoch_order(SMALL.seed, 0, 16, pipeline.STATISTICS_ORDER)
  np.testing.assert_array_equal(first[0]['image'][0], split.images[order[:8]])
  for a, b in zip(first, second, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_worker_processes_give_the_batches_this_process_makes(dataset):
  layout = _layout(range(2), per_device=4, global_batch=8)
  here = _train_batches(dataset.train, layout, 3, 4)
  workers = _train_batches(dataset.train, layout, 3, 4, workers=2)
  for a, b in zip(here, workers, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_inception_crop_boxes_stay_inside_with_the_allowed_area_and_aspect():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(2000):
    left, top, right, bottom = augment.crop_box(rng, 320, 240)
    assert 0 <= left < right <= 320 and 0 <= top < bottom <= 240
    areas.append((right - left) * (bottom - top) / (320 * 240))
    ratios.append((right - left) / (bottom - top))
  assert 0.07 < min(areas) < 0.12 and max(areas) > 0.9
  assert min(ratios) > 0.74 and max(ratios) < 1.35
  # A strip far outside the aspect range falls back to its largest central allowed box.
  assert augment.crop_box(np.random.default_rng(0), 1000, 10) == (493, 0, 506, 10)


def test_center_crop_keeps_the_central_87_5_percent_of_the_shorter_side():
  image = np.zeros((64, 128, 3), np.uint8)
  image[4:60, 36:92] = 255  # The central 56x56 of 64 rows: exactly the crop for size 56.
  out = augment.center_crop(Image.fromarray(image), 56)
  assert out.shape == (56, 56, 3)
  assert out.min() == 255


def test_pad_crop_and_flip_match_their_definition():
  pixels = np.random.default_rng(0).integers(0, 255, (6, 6, 3)).astype(np.uint8)
  image = Image.fromarray(pixels)
  flips = 0
  for seed in range(10):
    out = augment.resize_pad_crop(image, np.random.default_rng(seed), 6, 2, flip=True)
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 5, size=2)
    expected = np.pad(pixels, ((2, 2), (2, 2), (0, 0)))[top:top + 6, left:left + 6]
    if rng.random() < 0.5:
      expected, flips = expected[:, ::-1], flips + 1
    np.testing.assert_array_equal(out, expected)
  assert 0 < flips < 10


def test_a_missing_truncated_or_foreign_shard_is_named(shards, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(shards, copy)
  index = image_records.read_index(copy)
  second = os.path.join(copy, index.splits['train'].shards[1])
  os.replace(second, second + '.moved')
  with pytest.raises(DatasetError, match=f'{second}: no such shard'):
    images.open_images(copy)
  foreign = os.path.join(copy, index.splits['val'].shards[0])
  shutil.copy(foreign, second)  # Another split's shard (5 records) where this one belongs.
  with pytest.raises(DatasetError, match=f'{second}: 5 records; expected 20'):
    images.open_images(copy)
  with open(second + '.moved', 'rb') as f:
    data = f.read()
  with open(second, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(DatasetError, match=second):
    images.open_images(copy)


def test_an_undecodable_record_is_named(tmp_path):
  out = str(tmp_path / 'bad')
  _image_data.make_shards(out, 4, 2, shards_per_split=1)
  index = image_records.read_index(out)
  path = os.path.join(out, index.splits['train'].shards[0])
  good = io.BytesIO()
  Image.new('RGB', (4, 4)).save(good, format='PNG')
  image_records.write_shard(path, [image_records.encode_record(0, good.getvalue())] * 3
                            + [image_records.encode_record(1, b'not an image')])
  source = images.open_images(out).train
  assert pipeline.decode(source, 0)[0] == 0
  with pytest.raises(DatasetError, match=r'record 3 of the shards .*not an image'):
    pipeline.decode(source, 3)


def test_a_folder_without_images_or_with_one_class_is_refused(tmp_path):
  with pytest.raises(DatasetError, match='no such directory'):
    images.open_images(str(tmp_path / 'missing'))
  (tmp_path / 'one' / 'cats').mkdir(parents=True)
  Image.new('RGB', (4, 4)).save(tmp_path / 'one' / 'cats' / 'a.jpg')
  with pytest.raises(DatasetError, match='one'):
    images.open_images(str(tmp_path / 'one'))


def test_the_data_package_imports_no_jax():
  import subprocess
  import sys
  code = ('import sys, resnet_jax.data, resnet_jax.data.pipeline, resnet_jax.data.prepare_images;'
          'print(sorted(m for m in sys.modules if m == "jax" or m.startswith("jax.")))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'
