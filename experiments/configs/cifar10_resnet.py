"""He et al. (2015), section 4.2: ResNet-20 on CIFAR-10 with the paper's recipe.

  python experiments/train.py --config experiments/configs/cifar10_resnet.py \
      --workdir runs/cifar10_resnet20 --config.data.data_dir=/path/to/cifar-10-batches-bin

Needs a local CIFAR-10 (binary or python layout); nothing is downloaded. SGD 0.1, momentum
0.9, weight decay 1e-4, batch 128, the rate divided by 10 at 32k and 48k iterations, 64k
iterations, 4-pixel padding + random crop + horizontal flip, per-channel standardisation.
The paper reports 8.75% test error for ResNet-20 (91.25% accuracy); change
config.model.name to cifar_resnet32/44/56/110 (or cifar_plain*) for the other rows of its
Table 6.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model.name = 'cifar_resnet20'
  config.model.layout = 'torchvision'
  config.model.num_classes = 10
  config.data.name = 'cifar10'
  config.data.image_size = 32
  config.data.preprocess = 'standardize'
  config.data.augment.crop_padding = 4
  config.data.augment.flip = True
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.1
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'piecewise'
  config.optim.lr_boundaries = (32000, 48000)
  config.optim.lr_decay = 0.1
  config.train.batch_size = 128
  config.train.num_steps = 64000
  config.train.eval_every_epochs = 5
  config.run.eval_batch_size = 1000
  config.run.log_every_steps = 390
  config.run.checkpoint_every_steps = 3900
  config.run.keep_checkpoints = 3
  config.speed.steps_per_dispatch = 130
  return config
