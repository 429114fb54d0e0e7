"""He et al. (2015), section 4.2, in 20 minutes on a 2-core CPU: plain and residual CIFAR
nets of depth 20, 32, 44 and 56 on scikit-learn's real handwritten digits, two seeds each.

  python experiments/ablation.py --config experiments/configs/ablation_digits.py \
      --workdir runs/ablation

The expected result, measured (16 runs, 1,151 s wall / 590 s CPU on the 2-core development
machine while other jobs kept its load average near 10): final training error, mean ± std
over seeds 0 and 1, in percent --

  depth                20             32             44             56
  plain       0.17 ± 0.10    4.30 ± 2.76   49.44 ± 2.23   66.16 ± 0.39
  residual    0.00 ± 0.00    0.00 ± 0.00    0.05 ± 0.07    0.02 ± 0.03

Deeper plain nets end with higher training error (degradation: plain-56 is 66 points above
plain-20, and its curve stays above at every iteration), while the residual nets all reach
zero training error whatever their depth (differences below 0.1 point, one image of a
final-tenth window). The gradient-flow figure shows why: at initialisation the first-stage
gradient of the plain nets grows by orders of magnitude with depth (BatchNorm with batch
statistics makes deep plain nets' gradients explode, not vanish), the residual nets' stays
within a small factor of their last stage's.

Why these choices (the paper trains 64k iterations at 32x32 on a GPU; this has to fit 20
minutes of a shared 2-core CPU):
- Digits at their native 8x8 (image_size=8): the scans are 8x8, so 32x32 adds no
  information and costs 16 times the compute. The CIFAR nets' three stages run at 8, 4 and
  2 pixels; depth, not resolution, is what the comparison is about.
- The paper's nets and optimizer, unchanged: option-A shortcuts, BatchNorm after every
  conv in both twins, SGD with momentum 0.9 and weight decay 1e-4; the rate scaled
  linearly with the batch (0.1 at 128 -> 0.05 at 64), one epoch of warm-up, then a cosine
  decay to zero so the final tenth of the run measures where each net has converged.
  No augmentation: the quantity compared is the training error.
- 200 steps of 64 (about 9 epochs of the 1,437 training digits): every residual net is at
  0% training error by then; with 300 steps (measured too) the plain nets still end at
  0.02 / 3.61 / 38.71 / 60.56 % for depths 20 / 32 / 44 / 56 -- the gap is not an
  artefact of a short budget, and 200 steps leaves room for two seeds.
- Two seeds, all four depths: Figure 6's four curves per panel with a spread, within 20
  minutes. More seeds: --config.seeds="(0, 1, 2)" (about 50% longer).
- Checkpoints every 50 steps, four kept: the gradient-flow snapshots at 0 (rebuilt from the
  seed), 50, 100, 150 and 200 iterations, probed on one fixed batch of 64 training digits.
"""
import ml_collections

from resnet_jax.train.config import base_config


def get_config():
  train = base_config()
  train.model = 'cifar_resnet20'  # Replaced by each run's model.
  train.layout = 'torchvision'
  train.num_classes = 10
  train.dataset = 'digits'
  train.image_size = 8
  train.preprocess = 'standardize'
  train.optimizer = 'sgd'
  train.learning_rate = 0.05
  train.momentum = 0.9
  train.weight_decay = 1e-4
  train.schedule = 'warmup_cosine'
  train.warmup_epochs = 1.0
  train.batch_size = 64
  train.num_steps = 200
  train.eval_batch_size = 360
  train.steps_per_dispatch = 11
  train.log_every_steps = 11
  train.eval_every_epochs = 2
  train.checkpoint_every_steps = 50
  train.keep_checkpoints = 4
  train.progress_bar = False
  train.tensorboard = False

  config = ml_collections.ConfigDict()
  config.train = train
  config.models = ('cifar_plain20', 'cifar_plain32', 'cifar_plain44', 'cifar_plain56',
                   'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56')
  config.seeds = (0, 1)
  config.probe_batch_size = 64
  config.title = 'CIFAR-style nets on 8x8 handwritten digits'
  return config
