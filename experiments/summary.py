"""Prints a model's layers, output shapes and parameter counts, like Keras's summary().

  python experiments/summary.py --model resnet50 --layout coursera --input 64 --num_classes 6
  python experiments/summary.py --model cifar_plain56 --depth 1

Nothing is compiled: shapes come from `jax.eval_shape`, so ResNet-152 at 224 px takes
a second or two. Counts follow Keras: BatchNorm moving statistics (`batch_stats`) are
non-trainable parameters. A block's row counts everything inside it. Bad input (an
unknown model or layout, an input too small) prints one `error:` line and exits with code 2
(--debug shows the traceback).
"""
import sys

from absl import app, flags

from experiments import cli

SCRIPT = cli.Script(__doc__)
_MODEL = flags.DEFINE_string('model', 'resnet50', 'A model name of create_model, e.g. resnet50, '
                             'plain34, cifar_resnet20.', flag_values=SCRIPT.flags)
_LAYOUT = flags.DEFINE_string('layout', None, "coursera, keras or torchvision (default: the "
                              "model's).", flag_values=SCRIPT.flags)
_INPUT = flags.DEFINE_integer('input', None, 'Image side in pixels (default: 32 for cifar_*, '
                              'else 224).', lower_bound=1, flag_values=SCRIPT.flags)
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, "Logits (default: the model's).",
                                    lower_bound=1, flag_values=SCRIPT.flags)
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.',
                           flag_values=SCRIPT.flags)
_DEPTH = flags.DEFINE_integer('depth', None, 'Show modules down to this nesting depth (1: '
                              'blocks only).', lower_bound=1, flag_values=SCRIPT.flags)


def _shape(shape):
  return '(' + ', '.join(['None', *map(str, shape[1:])]) + ')'


def format_summary(title, summary, depth=None):
  """The table as text: one row per module call, then the totals."""
  rows = [('Layer (type)', 'Output Shape', 'Param #')]
  for row in summary.rows:
    if depth is not None and len(row.path) > depth:
      continue
    indent = '  ' * (len(row.path) - 1)
    rows.append((f'{indent}{row.path[-1]} ({row.kind})', _shape(row.output_shape),
                 f'{row.total:,}'))
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  body = [f'{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}' for r in rows]
  rule = '=' * (sum(widths) + 6)
  return '\n'.join([
      title, rule, body[0], rule, *body[1:], rule,
      f'Total params: {summary.total:,}',
      f'Trainable params: {summary.params:,}',
      f'Non-trainable params: {summary.batch_stats:,} (BatchNorm moving statistics)',
      f'Output: {_shape(summary.output_shape)} {summary.output_dtype}',
  ])


def _main(argv: list) -> int:
  if argv:
    raise app.UsageError(f'unexpected arguments: {argv}')
  import jax.numpy as jnp

  from resnet_jax.models import check_input_size, create_model, summarize
  overrides = {'dtype': jnp.dtype(_DTYPE.value)}
  if _LAYOUT.value is not None:
    overrides['layout'] = _LAYOUT.value
  if _NUM_CLASSES.value is not None:
    overrides['num_classes'] = _NUM_CLASSES.value
  size = _INPUT.value or (32 if _MODEL.value.startswith('cifar') else 224)
  model = create_model(_MODEL.value, **overrides)
  check_input_size(model, size)
  summary = summarize(model, (1, size, size, 3))
  layout = model.layout if isinstance(model.layout, str) else model.layout.name
  title = (f'Model: "{_MODEL.value}" (layout {layout}, input {size}x{size}x3, '
           f'{model.num_classes} classes, {_DTYPE.value})')
  print(format_summary(title, summary, _DEPTH.value))
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run(_main, argv)


if __name__ == '__main__':
  sys.exit(main())
