"""A tiny CIFAR-style ResNet-20 on random 8x8 images, for the fault-tolerance tests (seconds).

  python experiments/train.py --config experiments/configs/tiny_test.py --workdir /tmp/tiny

Exercises everything a real run does (the model zoo, a dataset loader, checkpoints every 4
steps, metrics, evaluation) at the smallest size: fake ImageNet (random uint8 8x8 images
with random labels among 1000 classes, generated from the seed, nothing read from disk),
batch 16, 24 steps, one step per dispatch so that a signal is seen after each step. The
labels carry no signal: accuracy stays near 0 (chance is 0.001). It exists for its speed,
not its accuracy.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model = 'cifar_resnet20'
  config.layout = 'torchvision'
  config.num_classes = 1000  # fake_imagenet's labels
  config.dataset = 'fake_imagenet'
  config.image_size = 8
  config.batch_size = 16
  config.num_steps = 24
  config.optimizer = 'sgd'
  config.learning_rate = 0.05
  config.momentum = 0.9
  config.steps_per_dispatch = 1  # One step per dispatch: signals are seen after each step.
  config.log_every_steps = 2
  config.checkpoint_every_steps = 4
  config.keep_checkpoints = 3
  config.progress_bar = False
  config.tensorboard = False
  return config
