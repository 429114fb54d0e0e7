"""The main job: the course's ResNet-50 (coursera layout, Adam 1e-3, batch 32) on SIGNS.

  python experiments/train.py                 # same as --config experiments/configs/signs_resnet50.py

Uses the real SIGNS files when data/signs holds train_signs.h5 and test_signs.h5, else the
synthetic SIGNS set (generated once into ~/.cache/resnet_jax, or config.cache_dir). On the 2-core CPU of the
development machine it reaches test accuracy >= 0.90 on the synthetic set in under 10
minutes (see README for the measured numbers). Rerunning the command resumes and, when the
run is complete, ends at once.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model = 'resnet50'
  config.layout = 'coursera'
  config.num_classes = 6
  config.dataset = 'signs'
  config.image_size = 64
  config.preprocess = 'scale'  # The course divides by 255.
  config.optimizer = 'adam'
  config.learning_rate = 1e-3
  config.batch_size = 32
  config.num_epochs = 10
  config.schedule = 'constant'
  config.steps_per_dispatch = 33  # One epoch of 1080 // 32 steps per dispatch.
  config.log_every_steps = 11
  config.checkpoint_every_steps = 165  # Every 5 epochs, and at the end.
  return config
