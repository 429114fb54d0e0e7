"""How fast the streaming input pipeline delivers images, next to the machine's decode limit.

`measure_input` times, in alternating windows of one run:
- 'pipeline': the training pipeline alone (resnet_jax.data.pipeline: read + decode (direct_jpeg:
  libjpeg-turbo straight to an array where simplejpeg is installed) + Inception crop +
  batch) with `workers` decoding processes, as a run gets its batches (no device, no
  training). With a `canvas_size` (config.speed.crop_resize='device') the host copies each
  crop box onto a canvas and the resize and flip are left to the train step; without, the
  host resizes (Pillow) and flips;
- 'decode_limit': Pillow decoding the same JPEG records to RGB and nothing else, in one
  process per core: the issue's bar, what a Pillow-decoding pipeline could at most deliver
  on this machine (the pipeline's direct decoder is faster than Pillow, so it may near it).
Each window of the pipeline starts a fresh iterator (its start-up is excluded: the first
batches are drawn before the clock starts), so neither phase inherits the other's buffers.
Wall-clock rates depend on what else the machine runs, so each window records the load
average; `cpu_ms_per_image` adds the CPU time per image of each stage in one process, which
says what one free core delivers, and `device_resize_ms_per_image` what the resize left to
the train step costs on this machine's default JAX device.
"""
import io
import multiprocessing
import os
import statistics
import time
from typing import Optional

import numpy as np
from PIL import Image

from resnet_jax.data import (
  augment,
  direct_jpeg,
  image_files,
  image_records,
  pipeline as data_pipeline,
)
from resnet_jax.data.layout import BatchLayout

_STARTUP_BATCHES = 2  # Drawn before timing: worker start-up and first fills.


def write_benchmark_shards(out: str, num_images: int, shorter_side: int = 256,
                           seed: int = 0, num_classes: int = 10) -> str:
  """Prepared shards of `num_images` photo-like JPEGs (quality 95, as prepare_images stores
  them) with the shorter side `shorter_side` and aspect 4:3, in `out`.

  The pictures are smooth colour fields with sensor-like noise: JPEG sizes and decode
  times near those of real photographs at this size (pure noise would be far slower).
  """
  rng = np.random.default_rng(seed)
  os.makedirs(out, exist_ok=True)
  width = shorter_side * 4 // 3
  records, labels = [], []
  for i in range(num_images):
    coarse = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, shorter_side), Image.BICUBIC),
                       np.float32)
    pixels = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='JPEG', quality=95)
    labels.append(i % num_classes)
    records.append(image_records.encode_record(labels[-1], buffer.getvalue()))
  name = image_records.shard_name('train', 0, 1)
  image_records.write_shard(os.path.join(out, name), records)
  val_name = image_records.shard_name('val', 0, 1)
  image_records.write_shard(os.path.join(out, val_name), records[:num_classes])
  count = lambda some: tuple(some.count(c) for c in range(num_classes))
  splits = {'train': image_records.SplitIndex((name,), (num_images,), count(labels)),
            'val': image_records.SplitIndex((val_name,), (len(records[:num_classes]),),
                                            count(labels[:num_classes]))}
  image_records.write_index(out, image_records.ImageRecordIndex(
      tuple(f'class_{c:02d}' for c in range(num_classes)), splits,
      {'encoding': 'jpeg', 'quality': 95, 'max_size': shorter_side}))
  return out


def _decode_range(task) -> int:
  """In a pool process: decodes records [start, stop) of `source` to RGB; returns the count."""
  source, start, stop = task
  for index in range(start, stop):
    _, encoded = source[index]
    with Image.open(io.BytesIO(encoded)) as image:
      image.convert('RGB').load()
  return stop - start


def _recipe(image_size: int, canvas_size: int) -> data_pipeline.Recipe:
  """The timed recipe: Inception crop and flip, resized on the host or (with a canvas) not."""
  return data_pipeline.Recipe(image_size, augment.Augmentation(
      inception_crop=True, flip=True, canvas_size=canvas_size))


def _time_pipeline(source, image_size: int, batch_size: int, workers: int,
                   num_batches: int, epoch: int, canvas_size: int = 0) -> float:
  """Images per second of one window of the training pipeline (start-up excluded)."""
  layout = BatchLayout(batch_size, (0,), batch_size)
  steps_per_epoch = len(source) // batch_size
  dataset = data_pipeline.train_dataset(source, layout, _recipe(image_size, canvas_size),
                                        epoch * steps_per_epoch, _STARTUP_BATCHES + num_batches)
  batches = data_pipeline.iterate(dataset, 1, workers)
  try:
    for _ in range(_STARTUP_BATCHES):
      next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
      batch = next(batches)
    elapsed = time.perf_counter() - start
  finally:
    batches.close()
  side = canvas_size or image_size
  assert batch['image'].shape == (1, batch_size, side, side, 3)
  return num_batches * batch_size / elapsed


def _time_decode(pool, source, num_images: int, processes: int) -> float:
  """Images per second of Pillow decoding `num_images` records in `processes` processes."""
  bounds = np.linspace(0, num_images, processes * 4 + 1).astype(int)
  tasks = [(source, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
  start = time.perf_counter()
  done = sum(pool.map(_decode_range, tasks))
  return done / (time.perf_counter() - start)


def cpu_ms_per_image(source, image_size: int, batch_size: int, num_images: int,
                     canvas_size: int = 0) -> dict:
  """CPU milliseconds per image in this process: the pipeline's whole work (each batch as
  a Grain worker makes it: read + decode + crop, written into the batch), the same with
  the resize on the host (for comparison), decoding alone, and the stages one at a time.

  CPU time, unlike wall time, hardly depends on what else the machine runs, so it says
  what a core delivers: cores needed = images/s x CPU seconds per image (worker start-up and
  the transfer between processes not included).
  """
  layout = BatchLayout(batch_size, (0,), batch_size)
  num_images = max(1, min(num_images, len(source)) // batch_size) * batch_size

  def batches_ms(canvas):
    example = data_pipeline.TrainExample(source, layout, _recipe(image_size, canvas), 0)
    make_batch = data_pipeline.TrainBatch(example)
    start = time.process_time()
    for step in range(num_images // batch_size):
      make_batch(step)
    return (time.process_time() - start) / num_images * 1e3

  def stage_ms(work, items, keep=True):
    """CPU ms per item of `work`, and its results. Decoded images are not kept while
    timed: holding a thousand of them costs fresh pages the pipeline never pays."""
    start = time.process_time()
    if keep:
      results = [work(item) for item in items]
    else:
      results = None
      for item in items:
        work(item)
    return (time.process_time() - start) / len(items) * 1e3, results

  indices = range(num_images)
  read, records = stage_ms(lambda i: source[i][1], indices)
  decode_pil, _ = stage_ms(image_files.decode_rgb_image, records, keep=False)
  decode_direct, _ = stage_ms(direct_jpeg.decode_rgb_fast, records, keep=False)
  images = [direct_jpeg.decode_rgb_fast(record) for record in records]
  rng = lambda i: data_pipeline.example_rng(0, 0, i)
  side = canvas_size or augment.canvas_size(min(images[0].shape[:2]), image_size)
  canvas = np.zeros((side, side, 3), np.uint8)
  copy, _ = stage_ms(lambda i: augment.crop_to_canvas(images[i], rng(i), image_size, canvas),
                     indices)
  resize, _ = stage_ms(lambda i: augment.random_resized_crop(images[i], rng(i), image_size,
                                                             True), indices)
  pipeline = batches_ms(canvas_size)
  host_resize = batches_ms(0) if canvas_size else pipeline
  start = time.process_time()
  _decode_range((source, 0, num_images))
  decode = (time.process_time() - start) / num_images * 1e3
  return {'pipeline_cpu_ms_per_image': pipeline, 'decode_cpu_ms_per_image': decode,
          'host_resize_pipeline_cpu_ms_per_image': host_resize,
          'stage_cpu_ms_per_image': {'read_record': read, 'decode_rgb_pillow': decode_pil,
                                     'decode_rgb_direct': decode_direct,
                                     'crop_box_copy_to_canvas': copy,
                                     'crop_box_resize_flip_on_host': resize}}


def device_resize_ms_per_image(canvas_batch: dict, image_size: int, repeats: int = 3) -> dict:
  """The cost of the resize left to the train step (box_resize) on the default JAX device:
  one jitted call on a batch of canvases, timed (after compiling) `repeats` times."""
  import jax

  from resnet_jax.train import box_resize
  resize = jax.jit(box_resize.resize_boxes, static_argnums=2)
  canvases, boxes = (jax.device_put(canvas_batch[k].reshape((-1,) + canvas_batch[k].shape[2:]))
                     for k in ('image', 'box'))
  jax.block_until_ready(resize(canvases, boxes, image_size))
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(repeats):
    jax.block_until_ready(resize(canvases, boxes, image_size))
  count = repeats * canvases.shape[0]
  return {'device_resize_wall_ms_per_image': (time.perf_counter() - wall) / count * 1e3,
          'device_resize_cpu_ms_per_image': (time.process_time() - cpu) / count * 1e3,
          'device_resize_device': str(jax.devices()[0].device_kind),
          'device_resize_batch': int(canvases.shape[0])}


def measure_input(source, *, image_size: int = 224, batch_size: int = 128, workers: int = 2,
                  num_batches: int = 8, windows: int = 3,
                  processes: Optional[int] = None, canvas_size: int = 0) -> dict:
  """Alternating windows of the pipeline and of the decode limit over the same records.

  Args:
    source: a RecordSource (open_images(...).train) of JPEG records.
    processes: decode-limit processes (default: one per core, os.cpu_count()).
    canvas_size: the pipeline leaves the crop's resize to the device with canvases of this
      side (augment.canvas_size); 0: it resizes on the host.

  Returns:
    {'pipeline_img_per_sec', 'decode_limit_img_per_sec' (medians over windows),
     'fraction_of_limit', 'windows': [{'pipeline', 'decode_limit', 'load_average'}], the CPU
     times per image (cpu_ms_per_image), the device resize's cost with a canvas, and the
     settings}.
  """
  processes = processes or os.cpu_count() or 1
  decode_images = min(len(source), num_batches * batch_size)
  pipeline_rates, limit_rates, loads = [], [], []
  # The decode pool is started (and its processes imported) before any clock runs.
  with multiprocessing.get_context('spawn').Pool(processes) as pool:
    pool.map(_decode_range, [(source, 0, 1)] * processes)
    for window in range(windows):
      loads.append(os.getloadavg()[0])
      pipeline_rates.append(_time_pipeline(source, image_size, batch_size, workers,
                                           num_batches, window, canvas_size))
      limit_rates.append(_time_decode(pool, source, decode_images, processes))
  pipeline, limit = statistics.median(pipeline_rates), statistics.median(limit_rates)
  cpu = cpu_ms_per_image(source, image_size, batch_size, decode_images, canvas_size)
  device = {}
  if canvas_size:
    layout = BatchLayout(batch_size, (0,), batch_size)
    data = data_pipeline.train_dataset(source, layout, _recipe(image_size, canvas_size), 0, 1)
    batches = data_pipeline.iterate(data, 1)
    try:
      device = device_resize_ms_per_image(next(batches), image_size)
    finally:
      batches.close()
  return {**cpu, **device, 'pipeline_img_per_sec': pipeline, 'decode_limit_img_per_sec': limit,
          'fraction_of_limit': pipeline / limit,
          'windows': [{'pipeline': p, 'decode_limit': d, 'load_average': a}
                      for p, d, a in zip(pipeline_rates, limit_rates, loads)],
          'image_size': image_size, 'batch_size': batch_size, 'workers': workers,
          'canvas_size': canvas_size, 'decode_processes': processes,
          'images_per_window': num_batches * batch_size, 'records': len(source)}
