"""He et al. (2016), Table 3 and Fig. 6: the original block against full pre-activation as
depth grows, on scikit-learn's handwritten digits (8x8).

  python experiments/ablation.py --config experiments/configs/ablation_depth_preact.py \
      --workdir runs/ablation_depth_preact
  python experiments/ablation.py --config experiments/configs/ablation_depth_preact.py \
      --quick                                            # CI smoke run: 4 runs of 12 steps
  python experiments/ablation.py --config experiments/configs/ablation_depth_preact.py:cifar10 \
      --config.base.data.data_dir=/path/to/cifar-10-batches-bin                # CIFAR-10

'cifar_resnet<d>' against 'cifar_preact_resnet<d>' at depths 20 and 110 (option-A
shortcuts in both), with ablation_digits.py's recipe (':cifar10': ablation_cifar10.py's).
Within 200 steps the 110-layer original net is still far from fitting the digits (8.97%
training error), the pre-activation one is not (0.05%): the paper's easier optimisation at
depth; README.md, "Block designs and shortcuts".
"""
import ml_collections

from experiments.configs.ablation_block_design import base_recipe

DEPTHS = (20, 110)
SEEDS = (0,)


def get_config(data='digits'):
  config = ml_collections.ConfigDict()
  config.base = base_recipe(data)
  config.models = tuple(f'cifar_{kind}{depth}' for kind in ('resnet', 'preact_resnet')
                        for depth in DEPTHS)
  config.seeds = SEEDS
  config.probe_batch_size = 64
  config.title = ('Original against pre-activation blocks by depth (He et al. 2016), '
                  + ('on 8x8 digits' if data == 'digits' else 'on CIFAR-10'))
  return config
