"""Transfer learning: Keras's ImageNet ResNet50 fine-tuned on SIGNS, with a new 6-class head.

  python experiments/train.py --config experiments/configs/signs_resnet50_finetune.py \
      --config.init_from=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --workdir runs/signs_finetune [--config.freeze_backbone=True]

init_from takes a Keras h5 file (weights-only or full-model, with or without top) or a
directory written by experiments/convert_keras.py. The head is replaced when the file has
none or one for other classes. freeze_backbone=True trains the head only: the backbone gets
no updates (optax.multi_transform) and its BatchNorm layers stay in inference mode.
Nothing is downloaded: without init_from the run trains from scratch. Not measured here
(no pretrained file on this machine); ImageNet features are expected to reach the course's
pretrained-model accuracy (about 0.95) within a few epochs.
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model = 'resnet50'
  config.layout = 'keras'  # Keras Applications' ResNet50: what its h5 files hold.
  config.num_classes = 6
  config.dataset = 'signs'
  config.image_size = 64
  config.preprocess = 'caffe'  # The preprocessing the ImageNet weights were trained with.
  config.optimizer = 'adam'
  config.learning_rate = 1e-4  # Small steps keep the pretrained features.
  config.batch_size = 32
  config.num_epochs = 5
  config.steps_per_dispatch = 33
  config.log_every_steps = 11
  config.checkpoint_every_steps = 165
  return config
