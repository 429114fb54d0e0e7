"""Accuracy of a trained run: on its own evaluation split, or on data it has never seen.

  python experiments/evaluate.py --workdir runs/digits
  python experiments/evaluate.py --workdir runs/signs_resnet50 --data_dir data/signs
  python experiments/evaluate.py --workdir runs/signs_resnet50 --synthetic_seed=1 --num_test=600

With --workdir alone, any run (SIGNS, synthetic SIGNS, digits, CIFAR-10, prepared images or
an image folder) is scored on the evaluation split of the dataset its config.json names:
'test' for SIGNS, digits and CIFAR-10, 'val' for images (the same split the run reported
during training). --data_dir names other data in the run's format: a directory holding
test_signs.h5 or that file itself for a SIGNS run (no train_signs.h5 needed), prepared
shards or an image folder with the run's classes for an images run, another data_dir for
the rest. --synthetic_seed (SIGNS runs) generates a fresh synthetic SIGNS set with another
seed than the training data's (0), into a temporary directory, and scores its test split:
pictures no training run or tuning choice has seen. Every picture goes through the input
pipeline's evaluation view of the run's recipe, as the run's own evaluation sees it; the
line adds top5_accuracy with 10 or more classes.

Uses the best checkpoint by the run's evaluation accuracy, as predict.py does
(--checkpoint=latest for the final one; on the run's own evaluation split the best one was
chosen on that split, so its accuracy there is optimistic); if it cannot be read, an older
one, said in one warning line on stderr. Prints one JSON line: accuracy, count, split,
checkpoint, step, data. Bad input prints one `error:` line and exits with code 2 (--debug
shows the traceback): data that does not fit the model (another number of classes, image
size or channels) is refused naming both.
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
_DATA_DIR = flags.DEFINE_string('data_dir', None, "Other data in the run's format (default: "
                                "the run's own evaluation split): for SIGNS runs a directory "
                                'holding test_signs.h5 or that file.', flag_values=SCRIPT.flags)
_SEED = flags.DEFINE_integer('synthetic_seed', None, 'SIGNS runs: evaluate on a fresh '
                             'synthetic set generated with this seed (not 0, the training set).',
                             flag_values=SCRIPT.flags)
_NUM_TEST = flags.DEFINE_integer('num_test', 600, 'Test pictures of the fresh synthetic set.',
                                 flag_values=SCRIPT.flags)
_WHICH = flags.DEFINE_enum('checkpoint', cli.DEFAULT_CHECKPOINT, ['best', 'latest'],
                           'Which checkpoint: the best by eval accuracy or the final one.',
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


def _check_classes(predictor, dataset, where: str) -> None:
  """DatasetError unless `dataset` has the classes the model predicts, in the same order."""
  from resnet_jax.errors import DatasetError
  if tuple(dataset.class_names) != tuple(predictor.class_names):
    raise DatasetError(f'{where} has the classes {list(dataset.class_names)[:10]} but the '
                       f'model of {predictor.checkpoint} predicts '
                       f'{list(predictor.class_names)[:10]}; expected the same classes in the '
                       'same order')


def _report(predictor, split, split_name: str, data: str) -> int:
  result = split_accuracy(predictor, split, _BATCH.value)
  print(json.dumps(dict(result, split=split_name, checkpoint=predictor.checkpoint,
                        step=predictor.step, data=data)))
  return cli.EXIT_OK


def _evaluate_run_data(config) -> int:
  """The run's own dataset (config.json's data group; --data_dir replaces its data_dir):
  its evaluation split."""
  from resnet_jax.train import setup
  from resnet_jax.train.inference import load_predictor
  data_config = config.data
  if _DATA_DIR.value is not None:
    data_config = data_config.copy_and_resolve_references()
    data_config.data_dir = _DATA_DIR.value
  dataset = setup.load_data(data_config, eval_only=True)  # Train shards are not needed.
  predictor = load_predictor(_WORKDIR.value, _WHICH.value)
  if dataset.image_shape is not None:
    predictor.check_fits(dataset.image_shape, dataset.num_classes, dataset.source)
  if config.data.name == 'images':
    _check_classes(predictor, dataset, data_config.data_dir)
  return _report(predictor, dataset.test, dataset.eval_split, dataset.source)


def _evaluate_signs_file(config) -> int:
  """A SIGNS test file (--data_dir) or a fresh synthetic set (--synthetic_seed)."""
  from resnet_jax import data
  from resnet_jax.data.signs import signs_test_file
  from resnet_jax.train.inference import load_predictor
  if config.data.name != 'signs' and _SEED.value is not None:
    raise app.UsageError(f'--synthetic_seed applies to SIGNS runs; this run trained on '
                         f'{config.data.name!r} (give --workdir alone, or --data_dir)')
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
  return _report(predictor, test, 'test', described)


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  if _SEED.value == 0:
    raise app.UsageError('--synthetic_seed=0 is the training set; pick another seed')
  if _DATA_DIR.value is not None and _SEED.value is not None:
    raise app.UsageError('give at most one of --data_dir and --synthetic_seed')
  from resnet_jax.train.workdir import load_saved_config
  config = load_saved_config(_WORKDIR.value)
  if _SEED.value is not None or (_DATA_DIR.value is not None and config.data.name == 'signs'):
    return _evaluate_signs_file(config)
  return _evaluate_run_data(config)


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  # Orbax's notes on read-only restores are warnings: only errors from it.
  return SCRIPT.run(_main, argv, library_level=logging.ERROR)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
