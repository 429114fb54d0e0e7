"""He et al. (2016), Fig. 4 and Table 2: the five placements of BN and ReLU in a residual
block, at one depth, several seeds, on scikit-learn's handwritten digits (8x8).

  python experiments/ablation.py --config experiments/configs/ablation_block_design.py \
      --workdir runs/ablation_block_design
  python experiments/ablation.py --config experiments/configs/ablation_block_design.py \
      --quick                                            # CI smoke run: 5 runs of 12 steps
  python experiments/ablation.py --config experiments/configs/ablation_block_design.py:cifar10 \
      --config.base.data.data_dir=/path/to/cifar-10-batches-bin --config.models=...  # CIFAR-10

Models 'cifar_resnet<d>:block_design=<design>' (resnet_jax/models/designs.py), trained with
ablation_digits.py's recipe (':cifar10': ablation_cifar10.py's). On the digits at depth 20
every design trains to 0% training error and 97.6-98.1% test accuracy: they do not separate
there (the paper's CIFAR-10 Table 2 does); README.md, "Block designs and shortcuts".
"""
import ml_collections

from experiments.configs import ablation_cifar10, ablation_digits
from resnet_jax.models import DESIGN_NAMES

DEPTH = 20
SEEDS = (0, 1)


def base_recipe(data='digits'):
  """The shared training config: the digits sweep's ('digits') or the 2015 paper's CIFAR-10
  recipe ('cifar10'), as ablation_digits.py and ablation_cifar10.py set them."""
  configs = {'digits': ablation_digits, 'cifar10': ablation_cifar10}
  if data not in configs:
    raise ValueError(f'config argument {data!r}; expected one of {tuple(configs)}')
  base = configs[data].get_config().base
  if data == 'digits':
    # Gradient-flow snapshots at 0, 100 and 200 steps rather than every 50: on this CPU a
    # probe of a deep net costs about as much as a hundred training steps.
    base.run.checkpoint_every_steps = 100
  return base


def get_config(data='digits'):
  config = ml_collections.ConfigDict()
  config.base = base_recipe(data)
  config.models = tuple(f'cifar_resnet{DEPTH if data == "digits" else 110}'
                        f':block_design={design}' for design in DESIGN_NAMES)
  config.seeds = SEEDS
  config.probe_batch_size = 64
  config.title = ('Block designs of He et al. 2016, Fig. 4, '
                  + ('on 8x8 digits' if data == 'digits' else 'on CIFAR-10'))
  return config
