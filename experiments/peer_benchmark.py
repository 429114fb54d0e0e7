"""The project's train step against the course's own stacks, timed side by side in one run.

  python experiments/peer_benchmark.py --peer-python /work/side-venv/bin/python \
      --windows 7 --steps 4

The course's ResNet-50 (coursera layout: 64x64x3 input, 6 classes), batch 32, float32,
Adam, one training step, in three stacks:
- 'resnet_jax': train.py's program on this backend (benchmarking.FastPath, data resident);
- 'keras_tf': the network as the course's notebook writes it, Keras 3 on the TensorFlow
  backend, `compile(jit_compile=False)`, `train_on_batch`, with TF_ENABLE_ONEDNN_OPTS=1
  (TensorFlow's oneDNN kernels, off by default on some CPUs) unless set otherwise;
- 'torch_eager': the same network in PyTorch (NCHW, 'same' padding as k//2), eager.

Each stack runs in its own worker process (TensorFlow and PyTorch are never requirements
of this project: they are imported from --peer-python, an interpreter of another
environment; a stack that cannot be imported is reported as skipped). The workers build,
compile and warm up first; then the windows alternate between them, one worker running at
a time, so that all see the same load. Prints one JSON line per stack: median ms per step,
spread, and the median over windows of the ratio to resnet_jax's window next to it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STACKS = ('resnet_jax', 'keras_tf', 'torch_eager')
STAGES = ((3, (64, 64, 256), 1), (4, (128, 128, 512), 2), (6, (256, 256, 1024), 2),
          (3, (512, 512, 2048), 2))


def keras_step(batch: int, size: int, classes: int):
  """The course's ResNet50 in Keras; returns a function running one train_on_batch."""
  import numpy as np
  import keras
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
  """train.py's step program on this backend, on a resident random split."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from resnet_jax.models import create_model
  from resnet_jax.train import benchmarking
  workload = benchmarking.Workload(model='resnet50', layout='coursera', image_size=size,
                                   batch_size=batch, num_classes=classes)
  model = create_model('resnet50', layout='coursera', num_classes=classes,
                       conv_impl=conv_impl)
  path = benchmarking.FastPath(workload, benchmarking.default_program(), model=model)
  path.compile()
  return lambda: path.run(1)  # Returns when the step's results are ready.


def worker(stack: str, args) -> None:
  """Builds the stack's step, warms up, then runs `n` steps per request on stdin."""
  if stack == 'keras_tf':
    os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    # TensorFlow enables its oneDNN kernels by default only on some CPUs; on this AMD EPYC
    # a step took 4.0 s without them and 1.5 s with them. The course's stack at its best.
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
  builders = {'keras_tf': keras_step, 'torch_eager': torch_step,
              'resnet_jax': lambda *a: jax_step(*a, conv_impl=args.conv_impl)}
  try:
    step = builders[stack](args.batch_size, args.image_size, args.num_classes)
  except ImportError as error:
    print(json.dumps({'skipped': f'{type(error).__name__}: {error}'}), flush=True)
    return
  for _ in range(args.warmup_steps):
    step()
  print(json.dumps({'ready': True}), flush=True)
  for line in sys.stdin:
    count = int(line)
    start = time.perf_counter()
    for _ in range(count):
      step()
    print(json.dumps({'seconds': time.perf_counter() - start}), flush=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer-python', default=sys.executable,
                      help='interpreter that can import tensorflow+keras and torch')
  parser.add_argument('--stacks', default=','.join(STACKS))
  parser.add_argument('--conv-impl', default='auto', help="resnet_jax's conv_impl")
  parser.add_argument('--image-size', type=int, default=64)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--num-classes', type=int, default=6)
  parser.add_argument('--steps', type=int, default=4, help='steps per window')
  parser.add_argument('--windows', type=int, default=7)
  parser.add_argument('--warmup-steps', type=int, default=2)
  parser.add_argument('--worker', choices=STACKS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker(args.worker, args)
    return 0
  stacks = [s.strip() for s in args.stacks.split(',') if s.strip()]
  unknown = sorted(set(stacks) - set(STACKS))
  if unknown:
    parser.error(f'--stacks: unknown {unknown}; expected some of {STACKS}')
  workers = {}
  passthrough = [f'--{name}={getattr(args, name.replace("-", "_"))}' for name in (
      'conv-impl', 'image-size', 'batch-size', 'num-classes', 'warmup-steps')]
  for stack in stacks:
    python = sys.executable if stack == 'resnet_jax' else args.peer_python
    process = subprocess.Popen([python, os.path.abspath(__file__), f'--worker={stack}',
                                *passthrough], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    reply = json.loads(process.stdout.readline() or '{"skipped": "worker died"}')
    if 'skipped' in reply:
      print(json.dumps({'stack': stack, 'skipped': reply['skipped']}), flush=True)
      process.wait()
      continue
    print(f'{stack}: ready', file=sys.stderr, flush=True)
    workers[stack] = process
  times = {stack: [] for stack in workers}
  for window in range(args.windows):
    for stack, process in workers.items():
      process.stdin.write(f'{args.steps}\n')
      process.stdin.flush()
      seconds = json.loads(process.stdout.readline())['seconds']
      times[stack].append(1e3 * seconds / args.steps)
    print(f'window {window + 1}/{args.windows}: ' + ', '.join(
        f'{s} {t[-1]:.0f} ms' for s, t in times.items()), file=sys.stderr, flush=True)
  for process in workers.values():
    process.stdin.close()
    process.wait()
  base = times.get('resnet_jax')
  for stack, ms in times.items():
    record = {'stack': stack, 'ms_per_step': statistics.median(ms), 'min_ms': min(ms),
              'max_ms': max(ms), 'windows': len(ms), 'steps_per_window': args.steps,
              'batch_size': args.batch_size, 'image_size': args.image_size}
    if base and stack != 'resnet_jax':
      ratios = [b / m for b, m in zip(base, ms)]
      record['resnet_jax_time_ratio'] = statistics.median(ratios)
      record['ratio_range'] = [min(ratios), max(ratios)]
    print(json.dumps(record), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
