"""Accuracy of a trained run on a labelled SIGNS-format test file it has never seen.

  python experiments/evaluate.py --workdir runs/signs_resnet50 --data_dir data/signs
  python experiments/evaluate.py --workdir runs/signs_resnet50 --synthetic_seed=1 --num_test=600
  python experiments/evaluate.py --workdir runs/my_photos [--data_dir my_photos_prepared]

For a run on streamed images (dataset 'images': imagenet_resnet50.py, folder_finetune.py)
--data_dir is prepared shards or an image folder (default: the run's own data_dir) with the
run's classes, and its validation split is evaluated; the line adds top5_accuracy with 10
or more classes. Every picture goes through the input pipeline's evaluation view of the
run's recipe, as the run's own evaluation sees it.

The first reads test_signs.h5 from a directory (the course's real files, say; --data_dir may
also name the test file itself, and no train_signs.h5 is needed); the second
generates a fresh synthetic SIGNS set with another seed than the training data's (0), into
a temporary directory, and evaluates on its test split: pictures that no training run or
tuning choice has seen. Uses the final checkpoint (--checkpoint=best for the best by eval
accuracy); if it cannot be read, an older one, said in one warning line on stderr. Prints
one JSON line: accuracy, count, checkpoint, step, data. Bad input prints one `error:` line
and exits with code 2 (--debug shows the traceback): data that does not fit the model
(another number of classes, image size or channels) is refused naming both.
"""
import json
import logging
import sys
import tempfile

import numpy as np
from absl import app, flags

from experiments import cli, malloc_tuning

SCRIPT = cli.Script(__doc__)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/signs_resnet50', "A training run's workdir.",
                               flag_values=SCRIPT.flags)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'A directory holding test_signs.h5 (no '
                                'train_signs.h5 needed), or a test file in its layout.',
                                flag_values=SCRIPT.flags)
_SEED = flags.DEFINE_integer('synthetic_seed', None, 'Evaluate on a fresh synthetic set '
                             'generated with this seed (not 0, the training set).',
                             flag_values=SCRIPT.flags)
_NUM_TEST = flags.DEFINE_integer('num_test', 600, 'Test pictures of the fresh synthetic set.',
                                 flag_values=SCRIPT.flags)
_WHICH = flags.DEFINE_enum('checkpoint', 'latest', ['best', 'latest'], 'Which checkpoint.',
                           flag_values=SCRIPT.flags)
_BATCH = flags.DEFINE_integer('batch_size', 100, 'Pictures per forward pass.', lower_bound=1,
                              flag_values=SCRIPT.flags)


def split_accuracy(predictor, split, batch_size: int) -> dict:
  """{'accuracy', 'top5_accuracy' (10 or more classes), 'count'} of a split (any source:
  arrays, shards, a folder), each picture seen as the run's evaluation sees it (the input
  pipeline's evaluation view of the run's recipe)."""
  from resnet_jax.data import pipeline
  from resnet_jax.data.layout import BatchLayout
  from resnet_jax.train import setup
  layout = BatchLayout(batch_size, (0,), batch_size)
  batches = pipeline.eval_dataset(split, layout, setup.input_recipe(predictor.config))
  correct = top5 = count = 0.0
  for batch in pipeline.iterate(batches, 1):
    keep = batch['mask'][0] > 0
    probs = predictor.probabilities(batch['image'][0][keep])
    labels = batch['label'][0][keep]
    ranks = (probs > probs[np.arange(len(labels)), labels][:, None]).sum(-1)
    correct += float((ranks == 0).sum())
    top5 += float((ranks < 5).sum())
    count += len(labels)
  result = {'accuracy': correct / count, 'count': int(count)}
  if len(predictor.class_names) >= 10:
    result['top5_accuracy'] = top5 / count
  return result


def _evaluate_images(predictor) -> int:
  """A run on dataset 'images': the val split of --data_dir (default: the run's data)."""
  from resnet_jax import data
  from resnet_jax.errors import DatasetError
  data_dir = _DATA_DIR.value or predictor.config.data.data_dir
  dataset = data.open_images(data_dir)
  if tuple(dataset.class_names) != tuple(predictor.class_names):
    raise DatasetError(f'{data_dir} has the classes {list(dataset.class_names)[:10]} but the '
                       f'model of {predictor.checkpoint} predicts '
                       f'{list(predictor.class_names)[:10]}; expected the same classes in the '
                       'same order')
  result = split_accuracy(predictor, dataset.test, _BATCH.value)
  print(json.dumps(dict(result, checkpoint=predictor.checkpoint, step=predictor.step,
                        data=dataset.source)))
  return cli.EXIT_OK


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  if _SEED.value == 0:
    raise app.UsageError('--synthetic_seed=0 is the training set; pick another seed')
  if _DATA_DIR.value is not None and _SEED.value is not None:
    raise app.UsageError('give exactly one of --data_dir and --synthetic_seed')
  if _SEED.value is None:
    from resnet_jax.train.workdir import load_saved_config
    if load_saved_config(_WORKDIR.value).data.name == 'images':
      from resnet_jax.train.inference import load_predictor
      return _evaluate_images(load_predictor(_WORKDIR.value, _WHICH.value))
    if _DATA_DIR.value is None:
      raise app.UsageError('give exactly one of --data_dir and --synthetic_seed')
  from resnet_jax import data
  from resnet_jax.data.signs import signs_test_file
  from resnet_jax.train.inference import load_predictor
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = _DATA_DIR.value
    if data_dir is None:
      data_dir = scratch
      data.make_synthetic_signs(scratch, num_train=6, num_test=_NUM_TEST.value,
                                seed=_SEED.value)
    test, class_names = data.load_signs_test(data_dir)
  described = (_DATA_DIR.value if _SEED.value is None
               else f'fresh synthetic SIGNS, seed {_SEED.value}')
  predictor = load_predictor(_WORKDIR.value, _WHICH.value)
  source = (signs_test_file(_DATA_DIR.value) if _SEED.value is None
            else f'the fresh synthetic SIGNS set (seed {_SEED.value})')
  predictor.check_fits(test.images.shape[1:], len(class_names), source)
  result = split_accuracy(predictor, test, _BATCH.value)
  print(json.dumps({'accuracy': result['accuracy'], 'count': result['count'],
                    'checkpoint': predictor.checkpoint, 'step': predictor.step,
                    'data': described}))
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  # Orbax's notes on read-only restores are warnings: only errors from it.
  return SCRIPT.run(_main, argv, library_level=logging.ERROR)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
