"""Transfer learning on your own pictures: Keras's ImageNet ResNet50 fine-tuned on a folder.

Put the pictures in one folder per class (my_photos/<class>/<image>, any format Pillow
reads; or my_photos/train/<class>/... and my_photos/val/<class>/...), then either train
straight from the folder (small sets; 10% of each class is held out, seed 0, when there is
no val/ folder):

  python experiments/train.py --config experiments/configs/folder_finetune.py \
      --config.data_dir=my_photos --config.num_classes=5 \
      --config.init_from=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --workdir runs/my_photos

or prepare it first (faster epochs, bad files listed and skipped instead of stopping the
run) and point data_dir at the result:

  python experiments/prepare_images.py my_photos my_photos_prepared
  python experiments/train.py --config experiments/configs/folder_finetune.py \
      --config.data_dir=my_photos_prepared --config.num_classes=5 \
      --config.init_from=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --workdir runs/my_photos

then predict or evaluate with the class names of the folder:

  python experiments/predict.py --workdir runs/my_photos photo.jpg
  python experiments/evaluate.py --workdir runs/my_photos --data_dir my_photos_prepared

num_classes must be the folder's number of classes (a mismatch is refused, naming both).
The model is Keras Applications' ResNet50 (keras layout, caffe preprocessing: BGR minus the
ImageNet means, as its weights were trained) at 224x224; training pictures get Inception's
random-resized crop + flip, evaluation the shorter side at 256 and the centre 224.
--config.freeze_backbone=True trains the new head only. Nothing is downloaded. Not measured
here (no pretrained file on this machine).
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model = 'resnet50'
  config.layout = 'keras'  # Keras Applications' ResNet50: what its h5 files hold.
  config.num_classes = 2  # Set to your folder's number of classes.
  config.dataset = 'images'
  config.data_dir = None  # Set on the command line: the folder or its prepared shards.
  config.image_size = 224
  config.preprocess = 'caffe'  # The preprocessing the ImageNet weights were trained with.
  config.augment.inception_crop = True
  config.augment.flip = True
  config.data_workers = 2
  config.optimizer = 'adam'
  config.learning_rate = 1e-4  # Small steps keep the pretrained features.
  config.batch_size = 32
  config.num_epochs = 10
  config.log_every_steps = 10
  config.checkpoint_every_steps = 500
  return config
