"""A CIFAR-style ResNet-20 on the 1,797 real handwritten digits scikit-learn ships (32x32x3).

  python experiments/train.py --config experiments/configs/digits_resnet.py --workdir runs/digits

Real data nobody here made, with no download: 1,437 training and 360 test images.
SGD with Nesterov momentum, warm-up + cosine, 2-pixel random crops (no flips: a mirrored
digit is another glyph).
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model = 'cifar_resnet20'
  config.layout = 'torchvision'
  config.num_classes = 10
  config.dataset = 'digits'
  config.image_size = 32
  config.preprocess = 'standardize'
  config.augment.crop_padding = 2
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 1.0
  config.batch_size = 64
  config.num_epochs = 30
  config.steps_per_dispatch = 22  # One epoch: 1,437 // 64 = 22 steps (the rest is dropped).
  config.log_every_steps = 22
  config.checkpoint_every_steps = 220  # Every 10 epochs.
  return config
