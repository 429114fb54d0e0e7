"""Training throughput on whatever device is present, as JSON lines on stdout.

  python experiments/benchmark.py --model resnet50 --layout coursera --image-size 64 \
      --batch-size 32 --dtype float32 --steps 8 --steps-per-dispatch 8 --baseline
  python experiments/benchmark.py --program loop,step --baseline --steps 4 --windows 3
  python experiments/benchmark.py --image-size 224 --layout torchvision --batch-size 256 \
      --dtype bfloat16 --optimizer sgd --steps 50 --steps-per-dispatch 50
  python experiments/benchmark.py --sweep 8,16,32,64 --steps 8 --out runs/benchmark
  python experiments/benchmark.py --profile --conv-impl xla

One line per path timed: 'train_loop' (--program loop: train.py's program off CPU, K
steps per dispatch in an on-device loop), 'train_resident_step' (--program step:
train.py's program on CPU, one dispatch per step, data on the device) and 'baseline'
(--baseline: a straightforward jitted Flax step fed from the host). The default
--program auto is the one train.py runs on this backend (train_py_default: true).

Fields: img_per_sec, ms_per_step (median of --windows windows of --steps steps, after
compiling and warming up), compile_seconds, device, backend, peak_memory_bytes (null where
the backend does not report it), flops_per_step (XLA cost analysis), achieved_tflops,
fraction_of_peak (against the datasheet peak named in peak_reference; null for unknown
devices such as CPUs), jax_version, and with --baseline speedup_vs_baseline (the median of
per-window ratios, the windows of all paths alternating). Progress goes to stderr.

--conv-impl picks config.conv_impl ('auto', 'xla', 'matmul'; see resnet_jax/models/conv.py).
--profile then also times each distinct conv / batch norm / dense layer of the model alone,
forward + backward on its real shapes (resnet_jax/analysis/profile.py), and prints the top
costs by layer type and by shape (JSON lines with 'profile' set, a table on stderr); the
step's measured time minus the layers' sum is what the layers alone do not show
(activations, additions, pooling, loss, optimizer, input).
See BENCHMARKS.md for measured numbers.
"""
import argparse
import json
import logging
import os
import sys

# Runnable as `python experiments/benchmark.py` from a checkout without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet50')
  parser.add_argument('--layout', default='coursera')
  parser.add_argument('--image-size', type=int, default=64)
  parser.add_argument('--batch-size', type=int, default=32, help='global, over all devices')
  parser.add_argument('--dtype', default='float32', help='float32 or bfloat16')
  parser.add_argument('--num-classes', type=int, default=None,
                      help='default: 6 (SIGNS) for the coursera layout, else 1000 (ImageNet)')
  parser.add_argument('--optimizer', default='adam', help='adam or sgd (momentum 0.9)')
  parser.add_argument('--steps', type=int, default=8,
                      help='timed steps per window (rounded up to whole dispatches)')
  parser.add_argument('--windows', type=int, default=5, help='timed windows; median reported')
  parser.add_argument('--warmup-steps', type=int, default=2,
                      help='untimed steps after compiling (at least one dispatch)')
  parser.add_argument('--steps-per-dispatch', type=int, default=1,
                      help="steps per chunk, one dispatch with the 'loop' program")
  parser.add_argument('--epoch-steps', type=int, default=8,
                      help='batches in the device-resident split (rounded up to whole '
                      'dispatches; a chunk never crosses an epoch)')
  parser.add_argument('--program', default='auto',
                      help="comma-separated: 'loop', 'step', or 'auto' (train.py's choice "
                      'on this backend)')
  parser.add_argument('--baseline', action='store_true',
                      help='also time a straightforward Flax train step, windows alternating')
  parser.add_argument('--sweep', default=None,
                      help='comma-separated batch sizes: one measurement each, and a table '
                      '(sweep.md) and a plot (sweep.png) in --out')
  parser.add_argument('--conv-impl', default='auto',
                      help="config.conv_impl: 'auto', 'xla' or 'matmul'")
  parser.add_argument('--profile', action='store_true',
                      help='also print the top costs of a step by layer type')
  parser.add_argument('--profile-top', type=int, default=12,
                      help='--profile: how many of the costliest layer shapes to print')
  parser.add_argument('--out', default=os.path.join('runs', 'benchmark'),
                      help='where --sweep writes its files')
  args = parser.parse_args(argv)
  if args.num_classes is None:
    args.num_classes = 6 if args.layout == 'coursera' else 1000
  for name in ('steps', 'windows', 'steps_per_dispatch', 'epoch_steps'):
    if getattr(args, name) < 1:
      parser.error(f'--{name.replace("_", "-")} must be >= 1')
  if args.warmup_steps < 0:
    parser.error('--warmup-steps must be >= 0')
  return args


def _int_list(text: str, flag: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise SystemExit(f'error: {flag}={text!r}: expected comma-separated positive integers')
  return values


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                      format='%(levelname)s %(name)s: %(message)s')
  logging.getLogger('resnet_jax').setLevel(logging.INFO)
  from resnet_jax.analysis import throughput
  from resnet_jax.errors import ResNetJaxError
  from resnet_jax.train import benchmarking

  batch_sizes = _int_list(args.sweep, '--sweep') if args.sweep else [args.batch_size]
  programs = [benchmarking.default_program() if p.strip() == 'auto' else p.strip()
              for p in args.program.split(',') if p.strip()]
  records = []
  try:
    for batch_size in batch_sizes:
      workload = benchmarking.Workload(
          model=args.model, layout=args.layout, image_size=args.image_size,
          batch_size=batch_size, dtype=args.dtype, num_classes=args.num_classes,
          optimizer=args.optimizer, steps_per_dispatch=args.steps_per_dispatch,
          conv_impl=args.conv_impl)
      for record in benchmarking.measure(
          workload, steps=args.steps, windows=args.windows, warmup_steps=args.warmup_steps,
          programs=programs, baseline=args.baseline, epoch_steps=args.epoch_steps):
        print(json.dumps(record, allow_nan=False), flush=True)
        records.append(record)
    if args.profile:
      _print_profile(args, records[-1]['ms_per_step'] if records else None)
  except ResNetJaxError as error:
    print(f'error: {type(error).__name__}: {error}', file=sys.stderr)
    return 2
  if args.sweep:
    written = throughput.write_sweep(records, args.out)
    print(f"wrote {written['table']} and {written['plot']}", file=sys.stderr)
  return 0


def _print_profile(args, step_ms) -> None:
  """The model's layers timed alone (analysis/profile.py): JSON lines, and a table on stderr."""
  import jax.numpy as jnp
  from resnet_jax.analysis import profile
  from resnet_jax.models import create_model
  model = create_model(args.model, layout=args.layout, num_classes=args.num_classes,
                       conv_impl=args.conv_impl,
                       dtype=jnp.bfloat16 if args.dtype == 'bfloat16' else jnp.float32)
  shape = (args.batch_size, args.image_size, args.image_size, 3)
  costs = profile.profile_layers(model, shape)
  kinds = profile.by_kind(costs)
  layers_ms = sum(c.ms_per_step for c in costs)
  for row in kinds:
    print(json.dumps({'profile': 'kind', **row}), flush=True)
  for cost in costs[:args.profile_top]:
    print(json.dumps({'profile': 'shape', 'kind': cost.kind, 'detail': cost.detail,
                      'calls': cost.calls, 'ms_each': cost.ms_each,
                      'ms_per_step': cost.ms_per_step}), flush=True)
  print(json.dumps({'profile': 'total', 'layers_ms': layers_ms, 'step_ms': step_ms}),
        flush=True)
  lines = [f'{"layer type":34} {"calls":>5} {"ms/step":>9} {"share":>6}']
  lines += [f'{r["kind"]:34} {r["calls"]:5d} {r["ms_per_step"]:9.1f} {r["share"]:6.1%}'
            for r in kinds]
  lines.append(f'layers alone (forward+backward): {layers_ms:.0f} ms; measured step: '
               + (f'{step_ms:.0f} ms' if step_ms else 'not measured'))
  lines.append(f'top {args.profile_top} shapes:')
  lines += [f'  {c.kind:32} {c.detail:28} x{c.calls:<3d} {c.ms_per_step:8.1f} ms'
            for c in costs[:args.profile_top]]
  print('\n'.join(lines), file=sys.stderr, flush=True)


if __name__ == '__main__':
  sys.exit(main())
