"""ResNet-50 v1.5 on ImageNet: the standard 90-epoch recipe, streamed from prepared shards.

Prepare ImageNet once (ILSVRC2012 train/ and val/ in ImageFolder layout, val/ sorted into
class folders as torchvision expects; shorter side stored at 256 px), then train:

  python experiments/prepare_images.py /data/imagenet /data/imagenet_prepared --workers 16
  python experiments/train.py --config experiments/configs/imagenet_resnet50.py \
      --config.data_dir=/data/imagenet_prepared --workdir runs/imagenet_resnet50

The recipe: torchvision layout (stride 2 in the 3x3 conv, v1.5), bfloat16 compute with
float32 parameters, SGD with Nesterov momentum 0.9, learning rate 0.1 x batch/256 (0.4 at
batch 1024) with a 5-epoch linear warm-up then cosine decay to 0, label smoothing 0.1,
weight decay 5e-5 on conv and dense kernels only (not on BatchNorm or biases), 90 epochs.
Training images: Inception's random-resized crop (8-100% of the area, aspect 3/4-4/3) to
224 + flip, decoded in data_workers processes; evaluation: shorter side to 256, centre 224,
every validation image once. metrics.jsonl has eval_accuracy and eval_top5_accuracy.

What it should reach (not run here: no ImageNet and no accelerator on this machine):
- torchvision's ResNet-50 v1.5: 76.13% top-1 (92.86% top-5) at 90 epochs, its published
  IMAGENET1K_V1 weights (a step schedule and weight decay 1e-4, without label smoothing);
- Flax's examples/imagenet README: 76.37% top-1 on a TPU v3-8, 76.54% on a v3-32 and
  76.67% on a v2-32, each 125,100 steps (100 epochs at batch 1024 in its configs/tpu.py,
  half precision, warm-up 5 epochs then cosine), and 76.72% on 8 V100s (250,200 steps,
  full precision).
A run of this config should land near 76% top-1. How many CPU cores the input pipeline
needs to keep an accelerator busy: see BENCHMARKS.md (streaming section).
"""
from resnet_jax.train.config import base_config

BATCH_SIZE = 1024


def get_config():
  config = base_config()
  config.model = 'resnet50'
  config.layout = 'torchvision'
  config.num_classes = 1000
  config.dtype = 'bfloat16'
  config.dataset = 'images'
  config.data_dir = None  # Set on the command line: the prepared shards.
  config.image_size = 224
  config.augment.inception_crop = True
  config.augment.flip = True
  config.data_workers = 16  # Decoding processes; see BENCHMARKS.md for how many one device needs.
  config.optimizer = 'sgd'
  config.momentum = 0.9
  config.nesterov = True
  config.batch_size = BATCH_SIZE
  config.learning_rate = 0.1 * BATCH_SIZE / 256
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 5.0
  config.label_smoothing = 0.1
  config.weight_decay = 5e-5
  config.num_epochs = 90
  config.eval_every_epochs = 1
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2500  # About every 2 epochs (1,251 steps per epoch).
  config.keep_checkpoints = 2
  return config
