"""He et al. (2015), section 4.2 and Figure 6: plain and residual 20/32/44/56 on CIFAR-10.

  python experiments/ablation.py --config experiments/configs/ablation_cifar10.py \
      --workdir runs/ablation_cifar10 --config.train.data_dir=/path/to/cifar-10-batches-bin

The paper's recipe for every run, as cifar10_resnet.py sets it: SGD 0.1, momentum 0.9,
weight decay 1e-4, batch 128, the rate divided by 10 at 32k and 48k iterations, 64k
iterations, 4-pixel padding + random crop + horizontal flip, per-channel standardisation;
option-A (zero-padding) shortcuts.
Needs a local CIFAR-10 (nothing is downloaded) and an accelerator: eight runs of 64k
iterations. The paper's Figure 6 is what to expect: the plain nets' training error rises
with depth (plain-56 worse than plain-20 throughout), the residual nets' falls with depth;
Table 6 reports 8.75 / 7.51 / 7.17 / 6.97% test error for ResNet-20 / 32 / 44 / 56.
"""
import ml_collections

from experiments.configs import cifar10_resnet


def get_config():
  train = cifar10_resnet.get_config()  # The paper's recipe; each run replaces the model.
  train.checkpoint_every_steps = 8000  # Gradient-flow snapshots every 8k iterations.
  train.keep_checkpoints = 8
  train.progress_bar = False
  train.tensorboard = True

  config = ml_collections.ConfigDict()
  config.train = train
  config.models = ('cifar_plain20', 'cifar_plain32', 'cifar_plain44', 'cifar_plain56',
                   'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56')
  config.seeds = (0,)
  config.probe_batch_size = 128
  config.title = 'CIFAR-10 (He et al. 2015, Figure 6)'
  return config
