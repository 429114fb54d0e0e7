"""ResNet-50 v1.5 on ImageNet: the standard 90-epoch recipe, streamed from prepared shards.

Prepare ImageNet once (ILSVRC2012 train/ and val/ in ImageFolder layout, val/ sorted into
class folders as torchvision expects; shorter side stored at 256 px), then train:

  python experiments/prepare_images.py /data/imagenet /data/imagenet_prepared --workers 16
  python experiments/train.py --config experiments/configs/imagenet_resnet50.py \
      --config.data.data_dir=/data/imagenet_prepared --workdir runs/imagenet_resnet50

Should land near 76% top-1 (torchvision's ResNet-50 v1.5: 76.13% at 90 epochs; Flax's
examples/imagenet: 76.4-76.7%); not run here (no ImageNet, no accelerator). How many CPU
cores the input pipeline needs to keep an accelerator busy: BENCHMARKS.md (streaming).
"""
from resnet_jax.train.config import base_config

BATCH_SIZE = 1024


def get_config():
  config = base_config()
  config.model.name = 'resnet50'
  config.model.layout = 'torchvision'  # v1.5: stride 2 in the 3x3 conv.
  config.model.num_classes = 1000
  config.model.dtype = 'bfloat16'  # Compute; parameters stay float32.
  config.data.name = 'images'
  config.data.data_dir = None  # Set on the command line: the prepared shards.
  config.data.image_size = 224
  # Training: Inception's random-resized crop to 224 + flip; evaluation: shorter side to
  # 256, centre 224, every validation image once.
  config.data.augment.inception_crop = True
  config.data.augment.flip = True
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.learning_rate = 0.1 * BATCH_SIZE / 256  # Scaled linearly with the batch.
  config.optim.schedule = 'warmup_cosine'
  config.optim.warmup_epochs = 5.0
  config.optim.weight_decay = 5e-5  # Kernels only, not BatchNorm or biases.
  config.train.batch_size = BATCH_SIZE
  config.train.label_smoothing = 0.1
  config.train.num_epochs = 90
  config.train.eval_every_epochs = 1
  config.run.log_every_steps = 100
  config.run.checkpoint_every_steps = 2500  # About every 2 epochs (1,251 steps per epoch).
  config.run.keep_checkpoints = 2
  # Decoding processes; see BENCHMARKS.md for how many one device needs.
  config.speed.data_workers = 16
  return config
