"""ResNet-50 (torchvision v1.5 layout) on random 224x224 ImageNet-shaped data, in bfloat16.

  python experiments/train.py --config experiments/configs/imagenet_resnet50_fake.py \
      --workdir runs/imagenet_fake

For throughput work on an accelerator: the data are random, so the accuracy means nothing;
watch images_per_sec in metrics.jsonl (or use experiments/benchmark.py). Batch 256 needs a
GPU or TPU; on a CPU pass --config.batch_size=8 --config.num_steps=4 to smoke-test it.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model = 'resnet50'
  config.layout = 'torchvision'
  config.num_classes = 1000
  config.dataset = 'fake_imagenet'
  config.image_size = 224
  config.dtype = 'bfloat16'
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 1.0
  config.label_smoothing = 0.1
  config.batch_size = 256
  config.num_steps = 500
  config.steps_per_dispatch = 50
  config.log_every_steps = 50
  config.eval_every_epochs = 1000  # Evaluate at the end only.
  config.checkpoint_every_steps = 500
  config.tensorboard = False
  return config
