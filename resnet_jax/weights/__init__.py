"""Importers of pretrained weights: Keras h5 files into our Flax variables.

  model = create_model('resnet50', layout='keras')
  variables = load_keras_h5('resnet50_weights_tf_dim_ordering_tf_kernels.h5', model)
  logits = model.apply(variables, caffe_preprocess(rgb_images), train=False)

  # Fine-tuning: the backbone from a notop file, a fresh 6-class head.
  model = create_model('resnet50', layout='keras', num_classes=6)
  fresh = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  variables = load_keras_h5('resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5',
                            model, init_variables=fresh)

Keras Applications' ResNet50V2 / 101V2 / 152V2 files load into create_model('resnet50v2')
(and 101v2, 152v2), whose layout is 'keras'; those weights expect inputs scaled to [-1, 1]
(keras.applications.resnet_v2.preprocess_input), not caffe_preprocess.

Keras Applications files need layout='keras' and the course's files
layout='coursera': a file does not record the BN epsilon or the stem's pooling, so
the importer checks names and shapes only, and the values: a NaN or infinity anywhere or a
BatchNorm moving variance <= 0 is a WeightsError, in load_keras_h5 and restore_variables
alike (validate.py).

A training run whose config names pretrained weights (config.finetune.init_from) starts
from `initial_variables(config.finetune, model, fresh_variables)`: the file's or directory's
arrays,
with the fresh classifier head where the file's does not fit.
"""
from resnet_jax.weights.checkpoint import restore_variables, save_variables
from resnet_jax.weights.convert import Conversion, convert_keras_h5
from resnet_jax.weights.keras_h5 import KerasLayer, KerasWeights, read_keras_h5
from resnet_jax.weights.keras_import import load_keras_h5
from resnet_jax.weights.keras_mapping import NAMING_SCHEMES, model_layers
from resnet_jax.weights.preprocess import IMAGENET_MEAN_BGR, caffe_preprocess
from resnet_jax.weights.pretrained import initial_variables

__all__ = [
    'Conversion', 'IMAGENET_MEAN_BGR', 'KerasLayer', 'KerasWeights', 'NAMING_SCHEMES',
    'caffe_preprocess', 'convert_keras_h5', 'initial_variables', 'load_keras_h5', 'model_layers',
    'read_keras_h5', 'restore_variables', 'save_variables',
]
