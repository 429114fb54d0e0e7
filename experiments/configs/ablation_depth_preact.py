"""He et al. (2016), Table 3 and Fig. 6: the original block against full pre-activation as
depth grows, on scikit-learn's handwritten digits (8x8).

  python experiments/ablation.py --config experiments/configs/ablation_depth_preact.py \
      --workdir runs/ablation_depth_preact
  python experiments/ablation.py --config experiments/configs/ablation_depth_preact.py \
      --quick                                            # CI smoke run: 4 runs of 12 steps
  python experiments/ablation.py --config experiments/configs/ablation_depth_preact.py:cifar10 \
      --config.train.data_dir=/path/to/cifar-10-batches-bin                # CIFAR-10

The 2015 CIFAR nets ('cifar_resnet<d>') against the 2016 pre-activation ones
('cifar_preact_resnet<d>': the same layers, BN -> ReLU before each conv, no BN on the
stem, a final BN -> ReLU) at depths 20 and 110 (56 too with --config.models, about 6
more minutes here); option-A shortcuts in both. The
training recipe is the digits sweep's (ablation_digits.py), or with ':cifar10' the 2015
paper's CIFAR-10 recipe (ablation_cifar10.py; add --config.models to reach 164 and 1001,
which use bottleneck blocks).

What to read it against -- the paper's CIFAR-10 test error (Table 3): ResNet-110 original
6.61 %, pre-activation 6.37 %; ResNet-164 5.93 % / 5.46 %; ResNet-1001 original 7.61 %,
pre-activation 4.92 %: the gap opens with depth, and the 1001-layer original net trains
more slowly at the start and overfits less well (Fig. 6).

Measured here (2026-12-01, 2-core development machine, `nice -n 5`, load average 8-14
from other jobs): 4 runs (seed 0) in 931 s wall / 429 s CPU; `--quick` 350 s wall / 112 s
CPU. Final training error / test accuracy: original 20 layers 0.00 / 98.06 %,
pre-activation 20 layers 0.00 / 98.33 %, original 110 layers 8.97 / 89.72 %,
pre-activation 110 layers 0.05 / 97.50 %: within 200 steps the 110-layer original net is
still far from fitting the digits, the pre-activation one is not -- easier optimisation at
depth, the paper's point, on one seed; not CIFAR-10's errors (README.md, "Block designs and
shortcuts").
"""
import ml_collections

from experiments.configs.ablation_block_design import train_recipe

DEPTHS = (20, 110)
SEEDS = (0,)


def get_config(data='digits'):
  config = ml_collections.ConfigDict()
  config.train = train_recipe(data)
  config.models = tuple(f'cifar_{kind}{depth}' for kind in ('resnet', 'preact_resnet')
                        for depth in DEPTHS)
  config.seeds = SEEDS
  config.probe_batch_size = 64
  config.title = ('Original against pre-activation blocks by depth (He et al. 2016), '
                  + ('on 8x8 digits' if data == 'digits' else 'on CIFAR-10'))
  return config
