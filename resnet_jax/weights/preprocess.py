"""Keras's 'caffe' input preprocessing, which the Keras ImageNet ResNet weights expect."""
import jax
import jax.numpy as jnp
import numpy as np

# ImageNet per-channel means in BGR order, on the 0-255 scale (Keras imagenet_utils).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


def caffe_preprocess(images):
  """RGB images on the 0-255 scale -> the input of Keras's ImageNet ResNet weights.

  Equals `keras.applications.resnet50.preprocess_input` (mode 'caffe', channels
  last): flips RGB to BGR and subtracts the ImageNet mean of each BGR channel; no
  scaling, so the result stays on the 0-255 scale, centred near zero.

  Args:
    images: uint8 or float array [..., H, W, 3], RGB, values in [0, 255]. A jax
      array stays a jax array (usable inside jit), anything else becomes numpy.

  Returns:
    float32 array of the same shape, BGR, mean-subtracted.
  """
  xp = jnp if isinstance(images, jax.Array) else np
  images = xp.asarray(images)
  if images.shape[-1] != 3:
    raise ValueError(
        f'caffe_preprocess: images have shape {images.shape}; expected RGB images '
        'with 3 channels last')
  bgr = images[..., ::-1].astype(xp.float32)
  return bgr - xp.asarray(IMAGENET_MEAN_BGR, xp.float32)
