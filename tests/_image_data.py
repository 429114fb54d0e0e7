"""Small generated image datasets for the streaming tests: a folder of JPEG and PNG pictures
whose dominant colour is the class (a tiny net tells them apart in a few steps), and the
same pictures written as prepared shards with image_records (the shared format)."""
import io
import os

import numpy as np
from PIL import Image

from resnet_jax.data import image_records

CLASSES = ('blue', 'green', 'red')  # Sorted, as folder listings and the index sort them.
_CHANNEL = {'red': 0, 'green': 1, 'blue': 2}


def picture(rng: np.random.Generator, name: str) -> Image.Image:
  """A picture of 20-40 x 20-40 pixels, noisy, with the class's channel bright."""
  height, width = (int(v) for v in rng.integers(20, 41, size=2))
  pixels = rng.integers(10, 90, (height, width, 3))
  pixels[..., _CHANNEL[name]] += 140
  return Image.fromarray(pixels.astype(np.uint8))


def make_folder(root: str, per_class: int, seed: int = 0, splits=('train', 'val'),
                val_per_class: int = 0) -> str:
  """`root/<split>/<class>/<n>.jpg|.png` (or `root/<class>/...` when val_per_class is 0)."""
  rng = np.random.default_rng(seed)
  layout = [('', per_class)] if not val_per_class else [(splits[0], per_class),
                                                        (splits[1], val_per_class)]
  for split, count in layout:
    for name in CLASSES:
      directory = os.path.join(root, split, name)
      os.makedirs(directory, exist_ok=True)
      for n in range(count):
        extension = '.png' if n % 4 == 3 else '.jpg'
        picture(rng, name).save(os.path.join(directory, f'{n:04d}{extension}'))
  return root


def make_shards(out: str, num_train: int, num_val: int, seed: int = 0,
                shards_per_split: int = 2, size_range=None) -> str:
  """A prepared dataset in `out`: JPEG records of `picture`s, labels cycling over CLASSES.

  size_range: (low, high) of the pictures' sides, for larger pictures (benchmarks).
  """
  rng = np.random.default_rng(seed)
  os.makedirs(out, exist_ok=True)
  splits = {}
  for split, count in (('train', num_train), ('val', num_val)):
    labels = [i % len(CLASSES) for i in range(count)]
    bounds = np.linspace(0, count, shards_per_split + 1).astype(int)
    names, records_per_shard = [], []
    for shard in range(shards_per_split):
      records = []
      for i in range(bounds[shard], bounds[shard + 1]):
        image = picture(rng, CLASSES[labels[i]])
        if size_range is not None:
          side = int(rng.integers(*size_range))
          image = image.resize((side, side * 3 // 4), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format='JPEG', quality=90)
        records.append(image_records.encode_record(labels[i], buffer.getvalue()))
      name = image_records.shard_name(split, shard, shards_per_split)
      image_records.write_shard(os.path.join(out, name), records)
      names.append(name)
      records_per_shard.append(len(records))
    per_class = tuple(labels.count(c) for c in range(len(CLASSES)))
    splits[split] = image_records.SplitIndex(tuple(names), tuple(records_per_shard), per_class)
  image_records.write_index(out, image_records.ImageRecordIndex(
      CLASSES, splits, {'encoding': 'jpeg', 'quality': 90, 'max_size': 256}))
  return out
