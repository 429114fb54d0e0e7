"""He et al.'s comparison at ImageNet depth: ResNet-50 against its plain twin on SIGNS.

  python experiments/ablation.py --config experiments/configs/ablation_signs.py \
      --workdir runs/ablation_signs

The course's setting for both networks (coursera layout, Adam 1e-3, batch 32, 64x64, 10
epochs), three seeds each, on the real SIGNS files in data/signs or else the synthetic set.
Meant for an accelerator (on a CPU, try --config.seeds="(0,)" first); its time is not
measured yet: the digits sweep (ablation_digits.py) is the one with a recorded result.
"""
import ml_collections

from resnet_jax.train.config import base_config


def get_config():
  base = base_config()
  base.model.name = 'resnet50'  # Replaced by each run's model.
  base.model.layout = 'coursera'
  base.model.num_classes = 6
  base.data.name = 'signs'
  base.data.image_size = 64
  base.data.preprocess = 'scale'
  base.optim.name = 'adam'
  base.optim.learning_rate = 1e-3
  base.optim.schedule = 'constant'
  base.train.batch_size = 32
  base.train.num_epochs = 10
  base.train.eval_every_epochs = 1
  base.run.log_every_steps = 11
  base.run.checkpoint_every_steps = 110  # 330 steps: snapshots at 0, 110, 220, 330.
  base.run.keep_checkpoints = 3
  base.run.progress_bar = False
  base.run.tensorboard = False
  base.speed.steps_per_dispatch = 33

  config = ml_collections.ConfigDict()
  config.base = base
  config.models = ('plain50', 'resnet50')
  config.seeds = (0, 1, 2)
  config.probe_batch_size = 32
  config.title = 'ResNet-50 and plain-50 on SIGNS'
  return config
