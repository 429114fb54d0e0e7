"""He et al. (2015), section 4.2, sized for a 2-core CPU: plain and residual CIFAR
nets of depth 20, 32, 44 and 56 on scikit-learn's real handwritten digits, two seeds each.

  python experiments/ablation.py --config experiments/configs/ablation_digits.py \
      --workdir runs/ablation

Reaches the paper's degradation result: deeper plain nets end with higher training error
(plain-56 66 points above plain-20), the residual nets reach about 0% at every depth
(README.md has the table; BENCHMARKS.md, "ablation_digits.py", the measured run).
"""
import ml_collections

from resnet_jax.train.config import base_config


def get_config():
  # The paper's nets and optimizer, cut to 20 minutes of a shared 2-core CPU (it trains 64k
  # iterations at 32x32 on a GPU). No augmentation: the quantity compared is training error.
  base = base_config()
  base.model.name = 'cifar_resnet20'  # Replaced by each run's model.
  base.model.layout = 'torchvision'
  base.model.num_classes = 10
  base.data.name = 'digits'
  # The scans are 8x8: 32x32 adds no information and costs 16 times the compute; depth,
  # not resolution, is what the comparison is about.
  base.data.image_size = 8
  base.data.preprocess = 'standardize'
  base.optim.name = 'sgd'
  base.optim.learning_rate = 0.05  # The paper's 0.1 at batch 128, scaled to 64.
  base.optim.momentum = 0.9
  base.optim.weight_decay = 1e-4
  # One epoch of warm-up, then cosine decay to zero, so that the final tenth of the run
  # measures where each net has converged.
  base.optim.schedule = 'warmup_cosine'
  base.optim.warmup_epochs = 1.0
  # 200 steps of 64 (about 9 epochs): every residual net is at 0% training error by then;
  # with 300 the plain nets' gap stays, so 200 leaves room for two seeds.
  base.train.batch_size = 64
  base.train.num_steps = 200
  base.train.eval_every_epochs = 2
  base.run.eval_batch_size = 360
  base.run.log_every_steps = 11
  # Gradient-flow snapshots at 0 (rebuilt from the seed), 50, 100, 150 and 200 iterations.
  base.run.checkpoint_every_steps = 50
  base.run.keep_checkpoints = 4
  base.run.progress_bar = False
  base.run.tensorboard = False
  base.speed.steps_per_dispatch = 11

  config = ml_collections.ConfigDict()
  config.base = base
  config.models = ('cifar_plain20', 'cifar_plain32', 'cifar_plain44', 'cifar_plain56',
                   'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56')
  # Figure 6's four curves per panel with a spread; --config.seeds="(0, 1, 2)": ~50% longer.
  config.seeds = (0, 1)
  config.probe_batch_size = 64
  config.title = 'CIFAR-style nets on 8x8 handwritten digits'
  return config
