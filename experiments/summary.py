"""Prints a model's layers, output shapes and parameter counts, like Keras's summary().

  python experiments/summary.py --model resnet50 --layout coursera --input 64 --num-classes 6
  python experiments/summary.py --model cifar_plain56 --depth 1

Nothing is compiled: shapes come from `jax.eval_shape`, so ResNet-152 at 224 px takes
a second or two. Counts follow Keras: BatchNorm moving statistics (`batch_stats`) are
non-trainable parameters. A block's row counts everything inside it. Library errors
(an unknown model or layout, an input too small) print one line and exit with code 2.
"""
import argparse
import os
import sys

# Runnable as `python experiments/summary.py` from a checkout without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402

from resnet_jax.errors import ResNetJaxError  # noqa: E402
from resnet_jax.models import (MODEL_NAMES, check_input_size,  # noqa: E402
                               create_model, summarize)


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet50', help=f'one of {MODEL_NAMES}')
  parser.add_argument('--layout', default=None,
                      help="coursera, keras or torchvision (default: the model's)")
  parser.add_argument('--input', type=int, default=None,
                      help='image side in pixels (default: 32 for cifar_*, else 224)')
  parser.add_argument('--num-classes', '--num_classes', dest='num_classes', type=int,
                      default=None, help="logits (default: the model's)")
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                      help='compute dtype')
  parser.add_argument('--depth', type=int, default=None,
                      help='show modules down to this nesting depth (1: blocks only)')
  return parser.parse_args(argv)


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
  line = lambda r: f'{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}'
  rule = '=' * (sum(widths) + 6)
  body = [line(r) for r in rows]
  return '\n'.join([
      title, rule, body[0], rule, *body[1:], rule,
      f'Total params: {summary.total:,}',
      f'Trainable params: {summary.params:,}',
      f'Non-trainable params: {summary.batch_stats:,} (BatchNorm moving statistics)',
      f'Output: {_shape(summary.output_shape)} {summary.output_dtype}',
  ])


def main(argv=None):
  args = _parse(argv)
  overrides = {'dtype': jnp.dtype(args.dtype)}
  if args.layout is not None:
    overrides['layout'] = args.layout
  if args.num_classes is not None:
    overrides['num_classes'] = args.num_classes
  size = args.input or (32 if args.model.startswith('cifar') else 224)
  try:
    model = create_model(args.model, **overrides)
    check_input_size(model, size)
    summary = summarize(model, (1, size, size, 3))
  except ResNetJaxError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  layout = model.layout if isinstance(model.layout, str) else model.layout.name
  title = (f'Model: "{args.model}" (layout {layout}, input {size}x{size}x3, '
           f'{model.num_classes} classes, {args.dtype})')
  print(format_summary(title, summary, args.depth))
  return 0


if __name__ == '__main__':
  sys.exit(main())
