"""A run says what it does: one start-up line naming the model, the data and where it came
from, the initial weights (resumed checkpoint, pretrained file or from scratch) and the
devices."""
import logging

import jax

import helpers as fx
from resnet_jax.train import loop, progress


def _startup_lines(caplog):
  return [r.getMessage() for r in caplog.records
          if r.name == loop.log.name and r.getMessage().startswith('model ')]


def test_a_run_names_model_data_weights_and_devices_once_at_start(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger=loop.log.name)
  config = fx.tiny_config(**{'train.num_epochs': 1})
  dataset = fx.make_dataset()
  loop.train_and_evaluate(config, str(tmp_path), model=fx.TinyNet(), dataset=dataset)
  [line] = _startup_lines(caplog)
  assert line.startswith('model TinyNet module (config.model.name ')
  assert f'data: {dataset.source}' in line
  assert 'initial weights: from scratch' in line
  assert f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}' in line
  caplog.clear()
  config.train.num_epochs = 2  # Resuming says which checkpoint it starts from.
  loop.train_and_evaluate(config, str(tmp_path), model=fx.TinyNet(), dataset=dataset)
  [line] = _startup_lines(caplog)
  assert 'initial weights: resumed from checkpoint ' in line and 'checkpoints' in line


def test_pretrained_weights_are_named_by_their_file():
  line = progress.startup_line('resnet50', 'SIGNS h5 files in data/signs', 'keras:/w/r50.h5', None)
  assert line.startswith('model resnet50; data: SIGNS h5 files in data/signs; ')
  assert 'initial weights: pretrained weights from keras:/w/r50.h5;' in line


def test_help_shows_command_examples_as_written():
  from experiments import benchmark, cli
  joined = 'Use:\n  python x.py --a 1       --b 2\nText with   --spaces stays.'
  assert cli.restore_continuations(joined) == (
      'Use:\n  python x.py --a 1 \\\n      --b 2\nText with   --spaces stays.')
  example = [line for line in benchmark.SCRIPT.doc.splitlines() if '--image_size 64' in line]
  assert example == ['  python experiments/benchmark.py --model resnet50 --layout coursera '
                     '--image_size 64 \\']
