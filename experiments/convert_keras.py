r"""Converts a Keras h5 weights file into an Orbax checkpoint of our model's variables.

  python experiments/convert_keras.py resnet50_weights_tf_dim_ordering_tf_kernels.h5 \
      --layout keras --model resnet50 --out pretrained/resnet50_keras
  python experiments/convert_keras.py resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --layout keras --num_classes 6 --out pretrained/resnet50_signs_start
  python experiments/convert_keras.py resnet50.h5 --layout coursera --out pretrained/course

The input is any layout `resnet_jax.weights.read_keras_h5` reads (Keras Applications
downloads, `model.save('x.h5')` files such as the course's resnet50.h5, Keras 3
`.weights.h5`). The checkpoint is one PyTree {'params', 'batch_stats'} with exactly
the structure of `create_model(--model, layout=--layout, num_classes=N).init(...)`,
written by `resnet_jax.weights.save_variables` (its module docstring shows the
tree); a training run starts from it with `restore_variables(DIR)` or
`orbax.checkpoint.StandardCheckpointer().restore(DIR)`.

The work is `resnet_jax.weights.convert.convert_keras_h5`; this file only parses
flags. --num_classes defaults to the file's classifier size. When the file has no
classifier (a `_notop` file) or a different one, the head is freshly initialised
(from --seed) and this is said on the output. --out must not exist yet: nothing is
overwritten. Bad input prints one `error:` line and exits with code 2 (--debug shows the
traceback), writing nothing: among it a file with a NaN or infinity anywhere, or a BatchNorm
moving variance <= 0 (WeightsError naming the layer, the weight and the model's variable).
"""
import sys

from absl import app, flags

from experiments import cli

SCRIPT = cli.Script(__doc__)
_OUT = flags.DEFINE_string('out', None, 'New checkpoint directory (must not exist).',
                           flag_values=SCRIPT.flags)
_MODEL = flags.DEFINE_string('model', 'resnet50', 'Model name for create_model.',
                             flag_values=SCRIPT.flags)
_LAYOUT = flags.DEFINE_string('layout', 'keras',
                              "Layout preset: 'keras' for Keras Applications files, "
                              "'coursera' for the course's model.", flag_values=SCRIPT.flags)
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None,
                                    "Classes of the head (default: the file's).",
                                    flag_values=SCRIPT.flags)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of a freshly initialised head.',
                             flag_values=SCRIPT.flags)
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64,
                                   'Input size used to initialise a fresh head.',
                                   flag_values=SCRIPT.flags)


def _main(argv: list) -> int:
  if len(argv) != 1:
    raise app.UsageError('expected one input file: convert_keras.py IN.h5 --out DIR')
  if not _OUT.value:
    raise app.UsageError('--out DIR is required')
  from resnet_jax.weights.convert import convert_keras_h5
  (path,) = argv
  done = convert_keras_h5(path, _OUT.value, model_name=_MODEL.value, layout=_LAYOUT.value,
                          num_classes=_NUM_CLASSES.value, seed=_SEED.value,
                          image_size=_IMAGE_SIZE.value,
                          arg_names={name: f'--{name}' for name in (
                              'num_classes', 'image_size', 'layout', 'seed')} | {
                                  'out_dir': '--out', 'model_name': '--model'})
  if done.fresh_head:
    head = (f'new head of {done.num_classes} classes (seed {_SEED.value}); the file '
            f'had {done.file_classes or "no"} classes')
  else:
    head = f'head of {done.num_classes} classes from the file'
  print(f'read {path} ({done.file_layout}, {done.file_layers} layers with weights)')
  print(f'model {_MODEL.value}, layout {_LAYOUT.value}: {done.num_values:,} values; {head}')
  print(f'wrote {done.checkpoint}')
  return cli.EXIT_OK


def main(argv=None) -> int:
  """Runs the script with `argv` (the arguments after the program's name)."""
  return SCRIPT.run(_main, argv)


if __name__ == '__main__':
  sys.exit(main())
