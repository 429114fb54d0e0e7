"""Transfer learning on your own pictures: Keras's ImageNet ResNet50 fine-tuned on a folder.

Put the pictures in one folder per class (my_photos/<class>/<image>, any format Pillow
reads; or my_photos/train/<class>/... and my_photos/val/<class>/...), then either train
straight from the folder (small sets; 10% of each class is held out, seed 0, when there is
no val/ folder):

  python experiments/train.py --config experiments/configs/folder_finetune.py \
      --config.data.data_dir=my_photos --config.model.num_classes=5 \
      --config.finetune.init_from=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --workdir runs/my_photos

or prepare it first (faster epochs, bad files listed and skipped instead of stopping the
run) and point data.data_dir at the result:

  python experiments/prepare_images.py my_photos my_photos_prepared
  python experiments/train.py --config experiments/configs/folder_finetune.py \
      --config.data.data_dir=my_photos_prepared --config.model.num_classes=5 \
      --config.finetune.init_from=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --workdir runs/my_photos

then predict or evaluate with the class names of the folder:

  python experiments/predict.py --workdir runs/my_photos photo.jpg
  python experiments/evaluate.py --workdir runs/my_photos --data_dir my_photos_prepared

model.num_classes must be the folder's number of classes (a mismatch is refused, naming
both). Keras Applications' ResNet50 (keras layout, caffe preprocessing) at 224x224;
training pictures get Inception's random-resized crop + flip, evaluation the shorter side
at 256 and the centre 224. --config.finetune.freeze_backbone=True trains the new head only.
Nothing is downloaded. Meant for an accelerator: ResNet50 at 224x224 is slow on a CPU (its
time and memory are not measured here: no pretrained file on this machine).
"""
from resnet_jax.train.config import base_config


def get_config():
  config = base_config()
  config.model.name = 'resnet50'
  config.model.layout = 'keras'  # Keras Applications' ResNet50: what its h5 files hold.
  config.model.num_classes = 2  # Set to your folder's number of classes.
  config.data.name = 'images'
  config.data.data_dir = None  # Set on the command line: the folder or its prepared shards.
  config.data.image_size = 224
  config.data.preprocess = 'caffe'  # The preprocessing the ImageNet weights were trained with.
  config.data.augment.inception_crop = True
  config.data.augment.flip = True
  config.optim.name = 'adam'
  config.optim.learning_rate = 1e-4  # Small steps keep the pretrained features.
  config.train.batch_size = 32
  config.train.num_epochs = 10
  config.run.log_every_steps = 10
  config.run.checkpoint_every_steps = 500
  config.speed.data_workers = 2
  return config
