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
  config.model.name = 'cifar_resnet20'
  config.model.layout = 'torchvision'
  config.model.num_classes = 1000  # fake_imagenet's labels
  config.data.name = 'fake_imagenet'
  config.data.image_size = 8
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.05
  config.optim.momentum = 0.9
  config.train.batch_size = 16
  config.train.num_steps = 24
  config.run.log_every_steps = 2
  config.run.checkpoint_every_steps = 4
  config.run.keep_checkpoints = 3
  config.run.progress_bar = False
  config.run.tensorboard = False
  config.speed.steps_per_dispatch = 1  # One step per dispatch: signals are seen after each step.
  return config
