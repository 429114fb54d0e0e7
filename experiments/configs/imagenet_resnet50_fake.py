"""ResNet-50 (torchvision v1.5 layout) on random 224x224 ImageNet-shaped data, in bfloat16.

  python experiments/train.py --config experiments/configs/imagenet_resnet50_fake.py \
      --workdir runs/imagenet_fake

For throughput work on an accelerator: the data are random, so the accuracy means nothing;
watch images_per_sec in metrics.jsonl (or use experiments/benchmark.py). Batch 256 needs a
GPU or TPU; on a CPU pass --config.train.batch_size=8 --config.train.num_steps=4 to
smoke-test it.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model.name = 'resnet50'
  config.model.layout = 'torchvision'
  config.model.num_classes = 1000
  config.model.dtype = 'bfloat16'
  config.data.name = 'fake_imagenet'
  config.data.image_size = 224
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'warmup_cosine'
  config.optim.warmup_epochs = 1.0
  config.train.label_smoothing = 0.1
  config.train.batch_size = 256
  config.train.num_steps = 500
  config.train.eval_every_epochs = 1000  # Evaluate at the end only.
  config.run.log_every_steps = 50
  config.run.checkpoint_every_steps = 500
  config.run.tensorboard = False
  config.speed.steps_per_dispatch = 50
  return config
