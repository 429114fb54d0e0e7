"""The project's train step against the course's own stacks, timed side by side in one run.

  python experiments/peer_benchmark.py --peer_python /work/side-venv/bin/python \
      --windows 7 --steps 4

The course's ResNet-50 (coursera layout: 64x64x3 input, 6 classes), batch 32, float32,
Adam, one training step, in three stacks:
- 'resnet_jax': train.py's feed and program on this backend (perf/benchmarking.TrainingPath,
  batches from the input pipeline);
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
import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

from experiments import cli, malloc_tuning
from experiments.peer_workers import STACKS

SCRIPT = cli.Script(__doc__)
_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'Interpreter that can import '
                                   'tensorflow+keras and torch.', flag_values=SCRIPT.flags)
_STACKS = flags.DEFINE_multi_enum('stacks', list(STACKS), list(STACKS), 'Stacks to time.',
                                  flag_values=SCRIPT.flags)
_CONV_IMPL = flags.DEFINE_enum('conv_impl', 'auto', ['auto', 'xla', 'matmul'],
                               "resnet_jax's conv_impl.", flag_values=SCRIPT.flags)
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Image side in pixels.', lower_bound=32,
                                   flag_values=SCRIPT.flags)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Batch size.', lower_bound=1,
                                   flag_values=SCRIPT.flags)
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 6, 'Classes.', lower_bound=2,
                                    flag_values=SCRIPT.flags)
_STEPS = flags.DEFINE_integer('steps', 4, 'Steps per window.', lower_bound=1,
                              flag_values=SCRIPT.flags)
_WINDOWS = flags.DEFINE_integer('windows', 7, 'Timed windows per stack.', lower_bound=1,
                                flag_values=SCRIPT.flags)
_WARMUP_STEPS = flags.DEFINE_integer('warmup_steps', 2, 'Untimed steps after building.',
                                     lower_bound=0, flag_values=SCRIPT.flags)


def _start_workers(stacks: list) -> dict:
  """{stack: worker process} for the stacks whose worker got ready; prints the skipped."""
  settings = json.dumps({'conv_impl': _CONV_IMPL.value, 'image_size': _IMAGE_SIZE.value,
                         'batch_size': _BATCH_SIZE.value, 'num_classes': _NUM_CLASSES.value,
                         'warmup_steps': _WARMUP_STEPS.value})
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peer_workers.py')
  workers = {}
  for stack in stacks:
    python = sys.executable if stack == 'resnet_jax' else _PEER_PYTHON.value
    # Our step runs as train.py runs it, under the malloc tunables; the peers as they come.
    env = malloc_tuning.tuned_environment() if stack == 'resnet_jax' else None
    process = subprocess.Popen([python, script, stack, settings], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    reply = json.loads(process.stdout.readline() or '{"skipped": "worker died"}')
    if 'skipped' in reply:
      print(json.dumps({'stack': stack, 'skipped': reply['skipped']}), flush=True)
      process.wait()
      continue
    print(f'{stack}: ready', file=sys.stderr, flush=True)
    workers[stack] = process
  return workers


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  workers = _start_workers(list(dict.fromkeys(_STACKS.value)))
  times = {stack: [] for stack in workers}
  for window in range(_WINDOWS.value):
    for stack, process in workers.items():
      process.stdin.write(f'{_STEPS.value}\n')
      process.stdin.flush()
      seconds = json.loads(process.stdout.readline())['seconds']
      times[stack].append(1e3 * seconds / _STEPS.value)
    print(f'window {window + 1}/{_WINDOWS.value}: ' + ', '.join(
        f'{s} {t[-1]:.0f} ms' for s, t in times.items()), file=sys.stderr, flush=True)
  for process in workers.values():
    process.stdin.close()
    process.wait()
  base = times.get('resnet_jax')
  for stack, ms in times.items():
    record = {'stack': stack, 'ms_per_step': statistics.median(ms), 'min_ms': min(ms),
              'max_ms': max(ms), 'windows': len(ms), 'steps_per_window': _STEPS.value,
              'batch_size': _BATCH_SIZE.value, 'image_size': _IMAGE_SIZE.value}
    if base and stack != 'resnet_jax':
      ratios = [b / m for b, m in zip(base, ms)]
      record['resnet_jax_time_ratio'] = statistics.median(ratios)
      record['ratio_range'] = [min(ratios), max(ratios)]
    print(json.dumps(record), flush=True)
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run(_main, argv)


if __name__ == '__main__':
  sys.exit(main())
