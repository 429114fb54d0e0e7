"""Why skips help, seen: loss surfaces and curvature of residual against plain CIFAR nets on
the 8x8 handwritten digits (Li et al. 2018, Figure 5, at depths 20 and 56).

  python experiments/landscape.py --config experiments/configs/landscape_digits.py \
      --workdir runs/landscape
  python experiments/landscape.py --workdir /tmp/landscape_quick --quick   # smoke run

The four nets are trained by the ablation sweep with ablation_digits.py's training config
(one seed; `--workdir runs/ablation` reuses its finished runs), then probed at their final
checkpoint: the loss on a 2D grid along two filter-normalised directions, the Hessian's
|lambda_min / lambda_max| on a coarser grid, and the loss from the starting weights to the
final ones. Reaches Li et al.'s picture: the residual surfaces stay smooth and bowl-shaped
at both depths, the plain ones get rougher with depth (README.md, "Loss landscapes").

Fields: everything of a sweep config (resnet_jax.ablation.sweep), plus `landscape`:
  subset_size           training digits the loss is computed on (the same for every net);
  grid_size, span       the 2D grid: grid_size points per axis over [-span, span];
  grid_batch            grid points evaluated together under vmap (1 is fastest on a CPU);
  curvature_grid_size   points per axis of the curvature grid (same square);
  lanczos_steps         Hessian-vector products per curvature point;
  interpolation_points  points on the line t in [-0.25, 1.25] from initial to final weights;
  direction_seed        seed of the two random directions (saved with the results too);
  ratio_threshold       |lambda_min / lambda_max| above this counts as markedly non-convex.
"""
import ml_collections

from experiments.configs import ablation_digits, ablation_quick


def quick(config):
  """A copy of `config` cut to a smoke run: the sweep's quick cut with depth 8 only, and a
  5 x 5 grid, 3 x 3 curvature points of 3 products, on 32 digits."""
  quick_config = ablation_quick.quick(config)
  quick_config.models = ('cifar_resnet8', 'cifar_plain8')
  landscape = quick_config.landscape
  landscape.subset_size = 32
  landscape.grid_size = 5
  landscape.curvature_grid_size = 3
  landscape.lanczos_steps = 3
  landscape.interpolation_points = 5
  return quick_config


def get_config():
  config = ablation_digits.get_config()
  config.models = ('cifar_resnet20', 'cifar_plain20', 'cifar_resnet56', 'cifar_plain56')
  config.seeds = (0,)
  config.title = 'CIFAR-style nets on 8x8 handwritten digits'
  config.landscape = ml_collections.ConfigDict({
      'subset_size': 128, 'grid_size': 21, 'span': 1.0, 'grid_batch': 1,
      'curvature_grid_size': 5, 'lanczos_steps': 8, 'interpolation_points': 31,
      'direction_seed': 0, 'ratio_threshold': 0.1})
  return config
