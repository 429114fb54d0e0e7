"""He et al.'s comparison at ImageNet depth: ResNet-50 against its plain twin on SIGNS.

  python experiments/ablation.py --config experiments/configs/ablation_signs.py \
      --workdir runs/ablation_signs

The course's setting for both networks (coursera layout, Adam 1e-3, batch 32, 64x64 input,
10 epochs), three seeds each, checkpoints every 110 steps for the gradient-flow snapshots.
Uses the real SIGNS files in data/signs when they are there, else the synthetic SIGNS set.
Six runs of a bottleneck 50-layer net: minutes each on a GPU, most of an hour on a 2-core
CPU (there, try --config.seeds="(0,)"). Not yet measured: this sweep has no recorded
result; the digits sweep (ablation_digits.py) is the one whose table is in the README.
"""
import ml_collections

from resnet_jax.train.config import base_config


def get_config():
  train = base_config()
  train.model = 'resnet50'  # Replaced by each run's model.
  train.layout = 'coursera'
  train.num_classes = 6
  train.dataset = 'signs'
  train.image_size = 64
  train.preprocess = 'scale'
  train.optimizer = 'adam'
  train.learning_rate = 1e-3
  train.batch_size = 32
  train.num_epochs = 10
  train.schedule = 'constant'
  train.steps_per_dispatch = 33
  train.log_every_steps = 11
  train.eval_every_epochs = 1
  train.checkpoint_every_steps = 110  # 330 steps: snapshots at 0, 110, 220, 330.
  train.keep_checkpoints = 3
  train.progress_bar = False
  train.tensorboard = False

  config = ml_collections.ConfigDict()
  config.train = train
  config.models = ('plain50', 'resnet50')
  config.seeds = (0, 1, 2)
  config.probe_batch_size = 32
  config.title = 'ResNet-50 and plain-50 on SIGNS'
  return config
