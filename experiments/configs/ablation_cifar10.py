"""He et al. (2015), section 4.2 and Figure 6: plain and residual 20/32/44/56 on CIFAR-10.

  python experiments/ablation.py --config experiments/configs/ablation_cifar10.py \
      --workdir runs/ablation_cifar10 --config.base.data.data_dir=/path/to/cifar-10-batches-bin

The paper's recipe for every run, as cifar10_resnet.py sets it (64k iterations, option-A
shortcuts); needs a local CIFAR-10 and an accelerator. Should reproduce Figure 6: plain
nets' training error rises with depth, residual nets' falls (Table 6: 8.75 / 7.51 / 7.17 /
6.97% test error for ResNet-20 / 32 / 44 / 56). Not run here.
"""
import ml_collections

from experiments.configs import cifar10_resnet


def get_config():
  base = cifar10_resnet.get_config()  # The paper's recipe; each run replaces the model.
  base.run.checkpoint_every_steps = 8000  # Gradient-flow snapshots every 8k iterations.
  base.run.keep_checkpoints = 8
  base.run.progress_bar = False
  base.run.tensorboard = True

  config = ml_collections.ConfigDict()
  config.base = base
  config.models = ('cifar_plain20', 'cifar_plain32', 'cifar_plain44', 'cifar_plain56',
                   'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56')
  config.seeds = (0,)
  config.probe_batch_size = 128
  config.title = 'CIFAR-10 (He et al. 2015, Figure 6)'
  return config
