"""He et al. (2015), Table 3: shortcut options A, B and C, at one depth, several seeds, on
scikit-learn's handwritten digits (8x8).

  python experiments/ablation.py --config experiments/configs/ablation_shortcuts.py \
      --workdir runs/ablation_shortcuts
  python experiments/ablation.py --config experiments/configs/ablation_shortcuts.py \
      --quick                                            # CI smoke run: 3 runs of 12 steps
  python experiments/ablation.py --config experiments/configs/ablation_shortcuts.py:cifar10 \
      --config.train.data_dir=/path/to/cifar-10-batches-bin                # CIFAR-10

The CIFAR net of He et al. 2015 with (A) zero-padding identity shortcuts where the shape
changes (no parameters), (B) projections where the shape changes, identity elsewhere,
(C) projections in every block; models named 'cifar_resnet<d>:shortcut=<option>'
(resnet_jax/models/designs.py also has the 2016 paper's 'conv_all' and 'scaled'). The
training recipe is the digits sweep's (ablation_digits.py), or with ':cifar10' the 2015
paper's CIFAR-10 recipe (ablation_cifar10.py).

What to read it against -- the paper's ImageNet top-1 error of ResNet-34 (Table 3; 10-crop):
A 25.03 %, B 24.52 %, C 24.19 %: all three far better than the plain net (28.54 %), the
differences between them small ("projection shortcuts are not essential for addressing the
degradation problem"); B over A because A's zero-padded channels learn no residual, C over
B by the extra parameters of the 13 projections. Here the nets are CIFAR nets on 8x8
digits: only two blocks change shape, so A and B differ in two small projections and C adds
one per block. Measured here (2026-12-01, 2-core
development machine, `nice -n 5`, load average 10-14 from other jobs): 6 runs (depth 32,
seeds 0 and 1) in 874 s wall / 355 s CPU; `--quick` 232 s wall / 91 s CPU. Test accuracy
A 97.64 ± 0.20, B 96.53 ± 0.20, C 96.67 ± 0.79 % (final training error 0.00 / 0.00 /
0.21 %): A ahead by about four test images, the reverse of the paper's ImageNet order, on
two seeds of a small set; README.md ("Block designs and shortcuts") has the table.
"""
import ml_collections

from experiments.configs.ablation_block_design import train_recipe

DEPTH = 32
SEEDS = (0, 1)
OPTIONS = ('zero_pad', 'projection', 'projection_all')  # A, B, C


def get_config(data='digits'):
  config = ml_collections.ConfigDict()
  config.train = train_recipe(data)
  depth = DEPTH if data == 'digits' else 56
  config.models = tuple(f'cifar_resnet{depth}:shortcut={option}' for option in OPTIONS)
  config.seeds = SEEDS
  config.probe_batch_size = 64
  config.title = ('Shortcut options A / B / C of He et al. 2015, '
                  + ('on 8x8 digits' if data == 'digits' else 'on CIFAR-10'))
  return config
