"""He et al. (2015), Table 3: shortcut options A, B and C, at one depth, several seeds, on
scikit-learn's handwritten digits (8x8).

  python experiments/ablation.py --config experiments/configs/ablation_shortcuts.py \
      --workdir runs/ablation_shortcuts
  python experiments/ablation.py --config experiments/configs/ablation_shortcuts.py \
      --quick                                            # CI smoke run: 3 runs of 12 steps
  python experiments/ablation.py --config experiments/configs/ablation_shortcuts.py:cifar10 \
      --config.base.data.data_dir=/path/to/cifar-10-batches-bin                # CIFAR-10

Models 'cifar_resnet<d>:shortcut=<option>': (A) zero-padding, (B) projections where the
shape changes, (C) projections everywhere; ablation_digits.py's recipe (':cifar10':
ablation_cifar10.py's). At depth 32 on the digits all three reach about 0% training error
and 96.5-97.6% test accuracy, differences of a few test images (the paper's ImageNet order
is C > B > A); README.md, "Block designs and shortcuts".
"""
import ml_collections

from experiments.configs.ablation_block_design import base_recipe

DEPTH = 32
SEEDS = (0, 1)
OPTIONS = ('zero_pad', 'projection', 'projection_all')  # A, B, C


def get_config(data='digits'):
  config = ml_collections.ConfigDict()
  config.base = base_recipe(data)
  depth = DEPTH if data == 'digits' else 56
  config.models = tuple(f'cifar_resnet{depth}:shortcut={option}' for option in OPTIONS)
  config.seeds = SEEDS
  config.probe_batch_size = 64
  config.title = ('Shortcut options A / B / C of He et al. 2015, '
                  + ('on 8x8 digits' if data == 'digits' else 'on CIFAR-10'))
  return config
