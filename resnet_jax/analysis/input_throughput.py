"""How fast the streaming input pipeline delivers images, next to the machine's decode limit.

`measure_input` times, in alternating windows of one run:
- 'pipeline': the training pipeline alone (grain_pipeline: read + decode + Inception crop +
  flip + batch to [1, batch, size, size, 3]) with `workers` decoding processes, as a run
  gets its batches (no device, no training);
- 'decode_limit': Pillow decoding the same JPEG records to RGB and nothing else, in one
  process per core: an upper bound on what any decoding pipeline on this machine delivers.
Each window of the pipeline starts a fresh iterator (its start-up is excluded: the first
batches are drawn before the clock starts), so neither phase inherits the other's buffers.
Wall-clock rates depend on what else the machine runs; `cpu_ms_per_image` adds the CPU
time per image of both, which says what one free core delivers.
"""
import io
import multiprocessing
import os
import statistics
import time
from typing import Optional

import numpy as np
from PIL import Image

from resnet_jax.data import grain_pipeline, image_records

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


def _time_pipeline(source, image_size: int, batch_size: int, workers: int,
                   num_batches: int, epoch: int) -> float:
  """Images per second of one window of the training pipeline (start-up excluded)."""
  layout = grain_pipeline.BatchLayout(batch_size, (0,), batch_size)
  steps_per_epoch = len(source) // batch_size
  dataset = grain_pipeline.train_dataset(
      source, layout, steps_per_epoch, 0, image_size,
      grain_pipeline.Augmentation(inception_crop=True, flip=True),
      epoch * steps_per_epoch, _STARTUP_BATCHES + num_batches)
  batches = grain_pipeline.iterate(dataset, 1, workers)
  try:
    for _ in range(_STARTUP_BATCHES):
      next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
      batch = next(batches)
    elapsed = time.perf_counter() - start
  finally:
    batches.close()
  assert batch['image'].shape == (1, batch_size, image_size, image_size, 3)
  return num_batches * batch_size / elapsed


def _time_decode(pool, source, num_images: int, processes: int) -> float:
  """Images per second of Pillow decoding `num_images` records in `processes` processes."""
  bounds = np.linspace(0, num_images, processes * 4 + 1).astype(int)
  tasks = [(source, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
  start = time.perf_counter()
  done = sum(pool.map(_decode_range, tasks))
  return done / (time.perf_counter() - start)


def cpu_ms_per_image(source, image_size: int, batch_size: int, num_images: int) -> dict:
  """CPU milliseconds per image in this process, for the pipeline's work (an example's
  read + decode + crop + flip, and its share of stacking the batch) and for decoding alone.

  CPU time, unlike wall time, hardly depends on what else the machine runs, so it says
  what a core delivers: cores needed = images/s x CPU seconds per image (worker start-up and
  the transfer between processes not included).
  """
  layout = grain_pipeline.BatchLayout(batch_size, (0,), batch_size)
  example = grain_pipeline.TrainExample(
      source, layout, max(1, len(source) // batch_size), 0, 0, image_size,
      grain_pipeline.Augmentation(inception_crop=True, flip=True))
  num_images = min(num_images, len(source) // batch_size * batch_size)
  start = time.process_time()
  for first in range(0, num_images, batch_size):
    examples = [example(k) for k in range(first, first + batch_size)]
    np.stack([e['image'] for e in examples])
  pipeline = (time.process_time() - start) / num_images
  start = time.process_time()
  _decode_range((source, 0, num_images))
  decode = (time.process_time() - start) / num_images
  return {'pipeline_cpu_ms_per_image': pipeline * 1e3, 'decode_cpu_ms_per_image': decode * 1e3}


def measure_input(source, *, image_size: int = 224, batch_size: int = 128, workers: int = 2,
                  num_batches: int = 8, windows: int = 3,
                  processes: Optional[int] = None) -> dict:
  """Alternating windows of the pipeline and of the decode limit over the same records.

  Args:
    source: a RecordSource (streamed.open_images(...).train.source) of JPEG records.
    processes: decode-limit processes (default: one per core, os.cpu_count()).

  Returns:
    {'pipeline_img_per_sec', 'decode_limit_img_per_sec' (medians over windows),
     'fraction_of_limit', 'windows': [{'pipeline': ..., 'decode_limit': ...}], and the
     settings}.
  """
  processes = processes or os.cpu_count() or 1
  decode_images = min(len(source), num_batches * batch_size)
  pipeline_rates, limit_rates = [], []
  # The decode pool is started (and its processes imported) before any clock runs.
  with multiprocessing.get_context('spawn').Pool(processes) as pool:
    pool.map(_decode_range, [(source, 0, 1)] * processes)
    for window in range(windows):
      pipeline_rates.append(_time_pipeline(source, image_size, batch_size, workers,
                                           num_batches, window))
      limit_rates.append(_time_decode(pool, source, decode_images, processes))
  pipeline, limit = statistics.median(pipeline_rates), statistics.median(limit_rates)
  cpu = cpu_ms_per_image(source, image_size, batch_size, decode_images)
  return {**cpu, 'pipeline_img_per_sec': pipeline, 'decode_limit_img_per_sec': limit,
          'fraction_of_limit': pipeline / limit,
          'windows': [{'pipeline': p, 'decode_limit': d}
                      for p, d in zip(pipeline_rates, limit_rates)],
          'image_size': image_size, 'batch_size': batch_size, 'workers': workers,
          'decode_processes': processes, 'images_per_window': num_batches * batch_size,
          'records': len(source)}
