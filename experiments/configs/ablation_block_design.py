"""He et al. (2016), Fig. 4 and Table 2: the five placements of BN and ReLU in a residual
block, at one depth, several seeds, on scikit-learn's handwritten digits (8x8).

  python experiments/ablation.py --config experiments/configs/ablation_block_design.py \
      --workdir runs/ablation_block_design
  python experiments/ablation.py --config experiments/configs/ablation_block_design.py \
      --quick                                            # CI smoke run: 5 runs of 12 steps
  python experiments/ablation.py --config experiments/configs/ablation_block_design.py:cifar10 \
      --config.train.data_dir=/path/to/cifar-10-batches-bin --config.models=...  # CIFAR-10

Every run is the CIFAR net of He et al. 2015 (option-A shortcuts) with one block design
(resnet_jax/models/designs.py): (a) original, (b) BN after addition, (c) ReLU before
addition, (d) ReLU-only pre-activation, (e) full pre-activation; the models are named
'cifar_resnet<d>:block_design=<design>'. The training recipe is the residual-vs-plain
digits sweep's (ablation_digits.py: SGD, warm-up + cosine, 200 steps of 64, no
augmentation); with the ':cifar10' argument it is the 2015 paper's CIFAR-10 recipe of
ablation_cifar10.py (64k iterations, 32x32 crops and flips), for an accelerator.

What to read it against -- the paper's CIFAR-10 test error of ResNet-110 (Table 2):
original 6.61 %, BN after addition 8.17 %, ReLU before addition 7.84 %, ReLU-only
pre-activation 6.71 %, full pre-activation 6.37 % (and for ResNet-164: 5.93 / 6.50 /
6.14 / 5.91 / 5.46 %). The paper's reasons: BN after the addition alters the signal on
the shortcut and impedes information propagation; a ReLU before the addition makes the
branch's output non-negative, so the forward signal can only grow; pre-activation keeps
the shortcut a clean identity and BN regularises the input of every weight layer.

Measured here (2026-12-01, the 2-core development machine, `nice -n 5`, while three other
jobs kept the load average at 9-15): the full sweep, 10 runs (depth 20, seeds 0 and 1),
1,178 s wall / 387 s CPU; `--quick`, 284 s wall / 119 s CPU (mostly compilation). Final
training error 0.00 % for every design; test accuracy (360 digits, mean over the seeds)
original 98.06, BN after addition 97.64, ReLU before addition 97.92, ReLU-only
pre-activation 97.78, full pre-activation 97.78 % -- spreads of 0.0-0.8 points, so the
digits at depth 20 separate no design; what they show is that every placement trains.
README.md ("Block designs and shortcuts") has the table.
"""
import ml_collections

from experiments.configs import ablation_cifar10, ablation_digits
from resnet_jax.models import DESIGN_NAMES

DEPTH = 20
SEEDS = (0, 1)


def train_recipe(data='digits'):
  """The shared training config: the digits sweep's ('digits') or the 2015 paper's CIFAR-10
  recipe ('cifar10'), as ablation_digits.py and ablation_cifar10.py set them."""
  configs = {'digits': ablation_digits, 'cifar10': ablation_cifar10}
  if data not in configs:
    raise ValueError(f'config argument {data!r}; expected one of {tuple(configs)}')
  train = configs[data].get_config().train
  if data == 'digits':
    # Gradient-flow snapshots at 0, 100 and 200 steps rather than every 50: on this CPU a
    # probe of a deep net costs about as much as a hundred training steps.
    train.checkpoint_every_steps = 100
  return train


def get_config(data='digits'):
  config = ml_collections.ConfigDict()
  config.train = train_recipe(data)
  config.models = tuple(f'cifar_resnet{DEPTH if data == "digits" else 110}'
                        f':block_design={design}' for design in DESIGN_NAMES)
  config.seeds = SEEDS
  config.probe_batch_size = 64
  config.title = ('Block designs of He et al. 2016, Fig. 4, '
                  + ('on 8x8 digits' if data == 'digits' else 'on CIFAR-10'))
  return config
