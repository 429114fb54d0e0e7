"""Training throughput on whatever device is present, as JSON lines on stdout.

  python experiments/benchmark.py --model resnet50 --layout coursera --image_size 64 \
      --batch_size 32 --dtype float32 --steps 8 --steps_per_dispatch 8 --baseline
  python experiments/benchmark.py --program chunk,step --baseline --steps 4 --windows 3
  python experiments/benchmark.py --image_size 224 --layout torchvision --batch_size 256 \
      --dtype bfloat16 --optimizer sgd --steps 50 --steps_per_dispatch 50
  python experiments/benchmark.py --sweep 8,16,32,64 --steps 8 --out runs/benchmark
  python experiments/benchmark.py --profile --conv_impl xla
  python experiments/benchmark.py --input_only --image_size 224 --batch_size 128 \
      --data_workers 2 [--data_dir prepared_shards]

One line per path timed, each train.py's feed and programs on batches of its input
pipeline: 'train_chunk' (--program chunk: train.py's program off CPU, K steps per dispatch
in one scan over their batches), 'train_step' (--program step: train.py's program on CPU,
one dispatch per step) and 'baseline' (--baseline: a plain jitted Flax step fed float32
images from the host, perf/flax_baseline.py). The default --program auto is the one
train.py runs on this backend (train_py_default: true).

Fields: img_per_sec, ms_per_step (median of --windows windows of --steps steps, after
compiling and warming up), compile_seconds, device, backend, peak_memory_bytes (null where
the backend does not report it), flops_per_step (XLA cost analysis), achieved_tflops,
fraction_of_peak (against the datasheet peak named in peak_reference; null for unknown
devices such as CPUs), jax_version, and with --baseline speedup_vs_baseline (the median of
per-window ratios, the windows of all paths alternating). Progress goes to stderr.
See BENCHMARKS.md for measured numbers (its commands write flags with dashes, --image-size;
every script reads a dash in a flag's name as an underscore).
--conv_impl picks config.speed.conv_impl ('auto', 'xla', 'matmul'; see resnet_jax/models/conv.py).
--profile then also times each distinct conv / batch norm / dense layer of the model alone,
forward + backward on its real shapes (resnet_jax/perf/profile.py), and prints the top
costs by layer type and by shape (JSON lines with 'profile' set, a table on stderr); the
step's measured time minus the layers' sum is what the layers alone do not show
(activations, additions, pooling, loss, optimizer, input).

--input_only times the streaming input pipeline alone against Pillow decoding the same JPEGs
in one process per core (resnet_jax/perf/input_throughput.py): one JSON line with
pipeline_img_per_sec, decode_limit_img_per_sec, fraction_of_limit, the load average (at the
start and end, and per window), and cores_needed: the cores this pipeline needs to feed
--accelerator_img_per_sec (7,300, an accelerator training ResNet-50), from its speed per
worker process; cores_needed_by_cpu_time the same from its CPU time per image
(pipeline_cpu_ms_per_image, which depends far less on the machine's other load;
decode_cpu_ms_per_image for decoding alone, stage_cpu_ms_per_image stage by stage).
--crop_resize device (the default a GPU run gets) times the pipeline that leaves the crop's
resize and flip to the train step, and adds device_resize_*_ms_per_image: that resize on
this machine's default JAX device (jitted, one batch); host times the pipeline that resizes
with Pillow.

Bad input prints one `error:` line and exits with code 2 (--debug shows the traceback),
before anything is measured: an --out that cannot be written (read-only, full) included.
"""
import json
import os
import sys

from absl import app, flags

from experiments import cli, malloc_tuning

SCRIPT = cli.Script(__doc__)
_MODEL = flags.DEFINE_string('model', 'resnet50', 'A model name of create_model.',
                             flag_values=SCRIPT.flags)
_LAYOUT = flags.DEFINE_string('layout', 'coursera', 'Layout preset.', flag_values=SCRIPT.flags)
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Image side in pixels.', lower_bound=1,
                                   flag_values=SCRIPT.flags)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Global batch, over all devices.',
                                   lower_bound=1, flag_values=SCRIPT.flags)
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'float32 or bfloat16.', flag_values=SCRIPT.flags)
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, 'Default: 6 (SIGNS) for the coursera '
                                    'layout, else 1000 (ImageNet).', lower_bound=1,
                                    flag_values=SCRIPT.flags)
_OPTIMIZER = flags.DEFINE_string('optimizer', 'adam', 'adam or sgd (momentum 0.9).',
                                 flag_values=SCRIPT.flags)
_STEPS = flags.DEFINE_integer('steps', 8, 'Timed steps per window (rounded up to whole '
                              'dispatches).', lower_bound=1, flag_values=SCRIPT.flags)
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows; the median is reported.',
                                lower_bound=1, flag_values=SCRIPT.flags)
_WARMUP_STEPS = flags.DEFINE_integer('warmup_steps', 2, 'Untimed steps after compiling (at '
                                     'least one dispatch).', lower_bound=0,
                                     flag_values=SCRIPT.flags)
_STEPS_PER_DISPATCH = flags.DEFINE_integer('steps_per_dispatch', 1, "Steps per chunk, one "
                                           "dispatch with the 'chunk' program.", lower_bound=1,
                                           flag_values=SCRIPT.flags)
_EPOCH_STEPS = flags.DEFINE_integer('epoch_steps', 8, 'Batches in the random training split '
                                    '(rounded up to whole dispatches; a chunk never crosses an '
                                    'epoch).', lower_bound=1, flag_values=SCRIPT.flags)
_PROGRAM = flags.DEFINE_string('program', 'auto', "Comma-separated: 'chunk', 'step' or "
                               "'auto' (train.py's choice on this backend).",
                               flag_values=SCRIPT.flags)
_BASELINE = flags.DEFINE_bool('baseline', False, 'Also time a plain Flax train step (the '
                              'baseline), windows alternating.', flag_values=SCRIPT.flags)
_SWEEP = flags.DEFINE_list('sweep', None, 'Comma-separated batch sizes: one measurement each, '
                           'and a table (sweep.md) and a plot (sweep.png) in --out.',
                           flag_values=SCRIPT.flags)
_CONV_IMPL = flags.DEFINE_enum('conv_impl', 'auto', ['auto', 'xla', 'matmul'],
                               'config.speed.conv_impl: how the convolutions compute.',
                               flag_values=SCRIPT.flags)
_PROFILE = flags.DEFINE_bool('profile', False, 'Also print the top costs of a step by layer '
                             'type.', flag_values=SCRIPT.flags)
_PROFILE_TOP = flags.DEFINE_integer('profile_top', 12, '--profile: how many of the costliest '
                                    'layer shapes to print.', lower_bound=1,
                                    flag_values=SCRIPT.flags)
_OUT = flags.DEFINE_string('out', os.path.join('runs', 'benchmark'), 'Where --sweep writes its '
                           'files.', flag_values=SCRIPT.flags)


_INPUT_ONLY = flags.DEFINE_bool('input_only', False, 'Time the streaming input pipeline alone '
                                '(decode + Inception crop to --image_size + flip + batch, '
                                '--data_workers processes) next to Pillow decoding the same '
                                'JPEGs in one process per core; no model.',
                                flag_values=SCRIPT.flags)
_DATA_DIR = flags.DEFINE_string('data_dir', None, '--input_only: prepared shards (index.json) '
                                'to read; default: --input_images generated 256-px JPEGs in a '
                                'temporary directory.', flag_values=SCRIPT.flags)
_INPUT_IMAGES = flags.DEFINE_integer('input_images', 2048, '--input_only: pictures generated '
                                     'when --data_dir is not given.', lower_bound=1,
                                     flag_values=SCRIPT.flags)
_DATA_WORKERS = flags.DEFINE_integer('data_workers', 2, '--input_only: decoding processes.',
                                     lower_bound=0, flag_values=SCRIPT.flags)
_INPUT_BATCHES = flags.DEFINE_integer('input_batches', 8, '--input_only: batches per timed '
                                      'window.', lower_bound=1, flag_values=SCRIPT.flags)
_CROP_RESIZE = flags.DEFINE_enum('crop_resize', 'device', ['device', 'host'], '--input_only: '
                                  "config.speed.crop_resize of the timed pipeline.",
                                  flag_values=SCRIPT.flags)
_ACCELERATOR_RATE = flags.DEFINE_float('accelerator_img_per_sec', 7300.0, '--input_only: the '
                                       'training speed to say the needed cores for.',
                                       lower_bound=1.0, flag_values=SCRIPT.flags)


def _input_only() -> int:
  """--input_only: one JSON line of the input pipeline's speed against the decode limit."""
  import math
  import tempfile

  from resnet_jax.data import augment, images
  from resnet_jax.perf import input_throughput
  load_at_start = os.getloadavg()
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = _DATA_DIR.value or input_throughput.write_benchmark_shards(
        os.path.join(scratch, 'shards'), _INPUT_IMAGES.value)
    dataset = images.open_images(data_dir)
    canvas = 0
    if _CROP_RESIZE.value == 'device':
      if not dataset.max_size:
        raise app.UsageError(f'--data_dir={data_dir}: its index states no max_size; expected '
                             'prepared shards (or --crop_resize=host)')
      canvas = augment.canvas_size(dataset.max_size, _IMAGE_SIZE.value)
    record = input_throughput.measure_input(
        dataset.train, image_size=_IMAGE_SIZE.value, batch_size=_BATCH_SIZE.value,
        workers=_DATA_WORKERS.value, num_batches=_INPUT_BATCHES.value, windows=_WINDOWS.value,
        canvas_size=canvas)
  # Cores the pipeline kept busy: its workers (the reading process itself with 0 workers).
  cores = min(max(_DATA_WORKERS.value, 1), os.cpu_count() or 1)
  per_core = record['pipeline_img_per_sec'] / cores
  record.update(mode='input_only', data=_DATA_DIR.value or f'{_INPUT_IMAGES.value} generated '
                '256-px JPEGs', crop_resize=_CROP_RESIZE.value,
                load_average_at_start=load_at_start, load_average=os.getloadavg(),
                cpu_count=os.cpu_count(),
                pipeline_img_per_sec_per_core=per_core,
                accelerator_img_per_sec=_ACCELERATOR_RATE.value,
                cores_needed=math.ceil(_ACCELERATOR_RATE.value / per_core),
                cores_needed_by_cpu_time=math.ceil(
                    _ACCELERATOR_RATE.value * record['pipeline_cpu_ms_per_image'] / 1e3))
  print(json.dumps(record, allow_nan=False), flush=True)
  return cli.EXIT_OK


def _batch_sizes() -> list[int]:
  if not _SWEEP.value:
    return [_BATCH_SIZE.value]
  try:
    values = [int(v) for v in _SWEEP.value]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise app.UsageError(f'--sweep={",".join(_SWEEP.value)}: expected comma-separated '
                         'positive integers')
  return values


def _check_out_dir(out: str) -> None:
  """UsageError unless `out` is a directory or can be made one (its nearest existing
  ancestor a directory)."""
  path = os.path.abspath(out)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    what = 'a file' if path == os.path.abspath(out) else f'under a file ({path})'
    raise app.UsageError(f"--out={out} is {what}; expected a directory for the sweep's "
                         'table and plot')


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  if _INPUT_ONLY.value:
    return _input_only()
  from resnet_jax.perf import benchmarking, throughput
  if SCRIPT.flags['out'].present and not _SWEEP.value:
    raise app.UsageError(f'--out={_OUT.value} names where --sweep writes its table and plot; '
                         'expected --sweep with it (without --sweep the records go to stdout)')
  if _SWEEP.value:  # Said before measuring, not after it.
    _check_out_dir(_OUT.value)
    throughput.check_out_dir(_OUT.value)

  num_classes = _NUM_CLASSES.value or (6 if _LAYOUT.value == 'coursera' else 1000)
  programs = [benchmarking.default_program() if p.strip() == 'auto' else p.strip()
              for p in _PROGRAM.value.split(',') if p.strip()]
  records = []
  for batch_size in _batch_sizes():
    workload = benchmarking.Workload(
        model=_MODEL.value, layout=_LAYOUT.value, image_size=_IMAGE_SIZE.value,
        batch_size=batch_size, dtype=_DTYPE.value, num_classes=num_classes,
        optimizer=_OPTIMIZER.value, steps_per_dispatch=_STEPS_PER_DISPATCH.value,
        conv_impl=_CONV_IMPL.value)
    for record in benchmarking.measure(
        workload, steps=_STEPS.value, windows=_WINDOWS.value,
        warmup_steps=_WARMUP_STEPS.value, programs=programs, baseline=_BASELINE.value,
        epoch_steps=_EPOCH_STEPS.value):
      print(json.dumps(record, allow_nan=False), flush=True)
      records.append(record)
    if _PROFILE.value:
      _print_profile(workload, records[-1]['ms_per_step'] if records else None)
  if _SWEEP.value:
    written = throughput.write_sweep(records, _OUT.value)
    print(f"wrote {written['table']} and {written['plot']}", file=sys.stderr)
  return cli.EXIT_OK


def _print_profile(workload, step_ms) -> None:
  """The model's layers timed alone (perf/profile.py): JSON lines, and a table on stderr."""
  from resnet_jax.perf import benchmarking, profile
  from resnet_jax.train import setup
  model = setup.build_model(benchmarking.workload_config(workload))
  shape = (workload.batch_size, workload.image_size, workload.image_size, 3)
  costs = profile.profile_layers(model, shape)
  kinds = profile.by_kind(costs)
  top = _PROFILE_TOP.value
  layers_ms = sum(c.ms_per_step for c in costs)
  for row in kinds:
    print(json.dumps({'profile': 'kind', **row}), flush=True)
  for cost in costs[:top]:
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
  lines.append(f'top {top} shapes:')
  lines += [f'  {c.kind:32} {c.detail:28} x{c.calls:<3d} {c.ms_per_step:8.1f} ms'
            for c in costs[:top]]
  print('\n'.join(lines), file=sys.stderr, flush=True)


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run(_main, argv)


if __name__ == '__main__':
  malloc_tuning.reexec_with_tuned_malloc()
  sys.exit(main())
