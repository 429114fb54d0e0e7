"""A smoke run of the residual-against-plain sweep: about a minute on a 2-core CPU.

  python experiments/ablation.py --config experiments/configs/ablation_quick.py \
      --workdir /tmp/ablation_quick

The digits sweep (ablation_digits.py) cut by `quick`: tiny CIFAR nets (depth 8 and 14,
plain and residual), one seed, 12 steps, and checkpoints every 6 steps so that the
gradient-flow figure still has snapshots. `experiments/ablation.py --quick` makes the same
cut of whatever --config names: each kind of model the sweep holds (plain or residual,
2015 or pre-activation, with the block design and shortcut its name sets) becomes the
CIFAR net of depth 8, and of depth 14 too if the sweep compares depths. What it checks is
that the pipeline runs end to end (training, probes, table, figures); its numbers mean
nothing. Its time and memory, measured: BENCHMARKS.md, "This machine: CPU", "Commands".
"""
from experiments.configs import ablation_digits
from resnet_jax import models
from resnet_jax.ablation import results


def quick_models(names):
  """The tiny CIFAR nets standing for the sweep's models (see the module docstring)."""
  kinds, depths = [], set()
  for name in names:
    model, _, settings = name.partition(':')
    results.parse_run_name(name)  # ConfigError naming a bad one.
    parsed = models.parse_model_name(model)
    depths.add(parsed.depth)
    kind = (f"cifar_{'preact_' if parsed.preactivation else ''}"
            f"{'resnet' if parsed.residual else 'plain'}", settings)
    if kind not in kinds:
      kinds.append(kind)
  tiny = (8, 14) if len(depths) > 1 else (8,)
  return tuple(f"{prefix}{depth}{':' + settings if settings else ''}"
               for prefix, settings in kinds for depth in tiny)


def quick(config):
  """A copy of the sweep config `config`, cut to a smoke run (see the module docstring)."""
  quick_config = config.copy_and_resolve_references()
  quick_config.models = quick_models(config.models)
  quick_config.seeds = (0,)
  quick_config.probe_batch_size = 16
  base = quick_config.base
  base.model.name = 'cifar_resnet20'  # Replaced by each run's model.
  if base.data.name in ('digits', 'cifar10'):
    base.model.num_classes = 10
  base.model.layout = 'torchvision'
  base.optim.lr_boundaries = ()
  base.optim.schedule = 'constant'
  base.optim.warmup_epochs = 0.0
  base.train.batch_size = 32
  base.train.num_steps = 12
  base.train.eval_every_epochs = 1
  base.run.eval_batch_size = 128
  base.run.log_every_steps = 4
  base.run.checkpoint_every_steps = 6
  base.run.keep_checkpoints = 2
  base.run.progress_bar = False
  base.run.tensorboard = False
  base.speed.steps_per_dispatch = 4
  return quick_config


def get_config():
  return quick(ablation_digits.get_config())
