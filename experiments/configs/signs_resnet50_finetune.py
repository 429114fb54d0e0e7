"""Transfer learning: Keras's ImageNet ResNet50 fine-tuned on SIGNS, with a new 6-class head.

  python experiments/train.py --config experiments/configs/signs_resnet50_finetune.py \
      --config.finetune.init_from=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --workdir runs/signs_finetune [--config.finetune.freeze_backbone=True]

init_from takes a Keras h5 file (weights-only or full-model, with or without top) or a
directory written by experiments/convert_keras.py; the head is replaced when the file has
none or one for other classes. freeze_backbone=True trains the head only (backbone BN in
inference mode). Nothing is downloaded. Not measured here (no pretrained file); ImageNet
features should reach the course's pretrained-model accuracy (about 0.95) in a few epochs.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model.name = 'resnet50'
  config.model.layout = 'keras'  # Keras Applications' ResNet50: what its h5 files hold.
  config.model.num_classes = 6
  config.data.name = 'signs'
  config.data.image_size = 64
  config.data.preprocess = 'caffe'  # The preprocessing the ImageNet weights were trained with.
  config.optim.name = 'adam'
  config.optim.learning_rate = 1e-4  # Small steps keep the pretrained features.
  config.train.batch_size = 32
  config.train.num_epochs = 5
  config.run.log_every_steps = 11
  config.run.checkpoint_every_steps = 165
  config.speed.steps_per_dispatch = 33
  return config
