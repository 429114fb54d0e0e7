"""A CIFAR-style ResNet-20 on the 1,797 real handwritten digits scikit-learn ships (32x32x3).

  python experiments/train.py --config experiments/configs/digits_resnet.py --workdir runs/digits

Real data nobody here made, with no download: 1,437 training and 360 test images.
SGD with Nesterov momentum, warm-up + cosine, 2-pixel random crops (no flips: a mirrored
digit is another glyph).
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model.name = 'cifar_resnet20'
  config.model.layout = 'torchvision'
  config.model.num_classes = 10
  config.data.name = 'digits'
  config.data.image_size = 32
  config.data.preprocess = 'standardize'
  config.data.augment.crop_padding = 2
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'warmup_cosine'
  config.optim.warmup_epochs = 1.0
  config.train.batch_size = 64
  config.train.num_epochs = 30
  config.run.log_every_steps = 22
  config.run.checkpoint_every_steps = 220  # Every 10 epochs.
  # One epoch: 1,437 // 64 = 22 steps (the rest is dropped).
  config.speed.steps_per_dispatch = 22
  return config
