"""DRAFT (numbers to be measured)."""
import ml_collections

from resnet_jax.train.config import base_config


def get_config():
  train = base_config()
  train.model = 'cifar_resnet20'  # Replaced by each run's model.
  train.layout = 'torchvision'
  train.num_classes = 10
  train.dataset = 'digits'
  train.image_size = 8
  train.preprocess = 'standardize'
  train.optimizer = 'sgd'
  train.learning_rate = 0.05
  train.momentum = 0.9
  train.weight_decay = 1e-4
  train.schedule = 'warmup_cosine'
  train.warmup_epochs = 1.0
  train.batch_size = 64
  train.num_steps = 200
  train.eval_batch_size = 360
  train.steps_per_dispatch = 11
  train.log_every_steps = 11
  train.eval_every_epochs = 2
  train.checkpoint_every_steps = 50
  train.keep_checkpoints = 4
  train.progress_bar = False
  train.tensorboard = False

  config = ml_collections.ConfigDict()
  config.train = train
  config.models = ('cifar_plain20', 'cifar_plain32', 'cifar_plain44', 'cifar_plain56',
                   'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56')
  config.seeds = (0, 1)
  config.probe_batch_size = 64
  config.title = 'CIFAR-style nets on 8x8 handwritten digits'
  return config
