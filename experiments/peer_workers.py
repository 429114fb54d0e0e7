"""One stack's train step for experiments/peer_benchmark.py, run in a worker process.

  python experiments/peer_workers.py STACK SETTINGS_JSON

Standard library only at import time: the Keras/TensorFlow and PyTorch workers run under
another environment's interpreter (--peer_python), which need not have this project's
packages. The worker builds and warms up its step, prints {"ready": true}, then for each
line n on stdin runs n steps and prints {"seconds": ...}.
"""
import json
import os
import sys
import time

STACKS = ('resnet_jax', 'keras_tf', 'torch_eager')
STAGES = ((3, (64, 64, 256), 1), (4, (128, 128, 512), 2), (6, (256, 256, 1024), 2),
          (3, (512, 512, 2048), 2))


def keras_step(batch: int, size: int, classes: int):
  """The course's ResNet50 in Keras; returns a function running one train_on_batch."""
  import keras
  import numpy as np
  from keras import layers

  def conv_bn(x, filters, kernel, strides, padding):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                      kernel_initializer='glorot_uniform')(x)
    return layers.BatchNormalization(axis=3)(x)

  def block(x, filters, strides, project):
    f1, f2, f3 = filters
    shortcut = x
    x = layers.Activation('relu')(conv_bn(x, f1, 1, strides, 'valid'))
    x = layers.Activation('relu')(conv_bn(x, f2, 3, 1, 'same'))
    x = conv_bn(x, f3, 1, 1, 'valid')
    if project:
      shortcut = conv_bn(shortcut, f3, 1, strides, 'valid')
    return layers.Activation('relu')(layers.Add()([x, shortcut]))

  inputs = keras.Input((size, size, 3))
  x = layers.ZeroPadding2D((3, 3))(inputs)
  x = layers.Activation('relu')(conv_bn(x, 64, 7, 2, 'valid'))
  x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
  for count, filters, strides in STAGES:
    for index in range(count):
      x = block(x, filters, strides if index == 0 else 1, index == 0)
  x = layers.Flatten()(layers.AveragePooling2D((2, 2))(x))
  outputs = layers.Dense(classes, activation='softmax')(x)
  model = keras.Model(inputs, outputs)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss='categorical_crossentropy',
                jit_compile=False)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(batch, size, size, 3)).astype('float32')
  labels = np.eye(classes, dtype='float32')[rng.integers(0, classes, batch)]
  return lambda: model.train_on_batch(images, labels)


def torch_step(batch: int, size: int, classes: int):
  """The course's ResNet50 in PyTorch eager; returns a function running one step."""
  import torch
  from torch import nn

  def conv_bn(cin, cout, kernel, stride, padding):
    return [nn.Conv2d(cin, cout, kernel, stride, padding),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]

  class Block(nn.Module):
    def __init__(self, cin, filters, stride, project):
      super().__init__()
      f1, f2, f3 = filters
      self.path = nn.Sequential(*conv_bn(cin, f1, 1, stride, 0), nn.ReLU(),
                                *conv_bn(f1, f2, 3, 1, 1), nn.ReLU(), *conv_bn(f2, f3, 1, 1, 0))
      self.shortcut = nn.Sequential(*conv_bn(cin, f3, 1, stride, 0)) if project else None

    def forward(self, x):
      shortcut = x if self.shortcut is None else self.shortcut(x)
      return torch.relu(self.path(x) + shortcut)

  modules = [*conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2)]
  cin = 64
  for count, filters, strides in STAGES:
    for index in range(count):
      modules.append(Block(cin, filters, strides if index == 0 else 1, index == 0))
      cin = filters[-1]
  modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
  model = nn.Sequential(*modules).train()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
  generator = torch.Generator().manual_seed(0)
  images = torch.rand((batch, 3, size, size), generator=generator)
  labels = torch.randint(0, classes, (batch,), generator=generator)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
  return step


def jax_step(batch: int, size: int, classes: int, conv_impl: str):
  """train.py's step program on this backend, fed by its input pipeline (random images)."""
  from resnet_jax.perf import benchmarking
  workload = benchmarking.Workload(model='resnet50', layout='coursera', image_size=size,
                                   batch_size=batch, num_classes=classes, conv_impl=conv_impl)
  path = benchmarking.TrainingPath(workload, benchmarking.default_program())
  path.compile()
  return lambda: path.run(1)  # Returns when the step's results are ready.


def worker(stack: str, settings: dict) -> None:
  """Builds the stack's step, warms up, then runs `n` steps per request on stdin."""
  if stack == 'keras_tf':
    os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    # TensorFlow enables its oneDNN kernels by default only on some CPUs; on this AMD EPYC
    # a step took 4.0 s without them and 1.5 s with them. The course's stack at its best.
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
  builders = {'keras_tf': keras_step, 'torch_eager': torch_step,
              'resnet_jax': lambda *a: jax_step(*a, conv_impl=settings['conv_impl'])}
  try:
    step = builders[stack](settings['batch_size'], settings['image_size'],
                           settings['num_classes'])
  except ImportError as error:
    print(json.dumps({'skipped': f'{type(error).__name__}: {error}'}), flush=True)
    return
  for _ in range(settings['warmup_steps']):
    step()
  print(json.dumps({'ready': True}), flush=True)
  for line in sys.stdin:
    count = int(line)
    start = time.perf_counter()
    for _ in range(count):
      step()
    print(json.dumps({'seconds': time.perf_counter() - start}), flush=True)



if __name__ == '__main__':
  worker(sys.argv[1], json.loads(sys.argv[2]))
