"""resnet_jax.analysis: residual against plain networks.

- gradient_flow: per-layer gradient-norm probe (pure, jittable) and per-stage aggregation.
- results: finished runs of a sweep -> rows -> results.csv / results.md.
- plots: training_error.png (He et al. 2015, Figure 6) and gradient_flow.png (matplotlib
  Figures, no pyplot: the caller's backend is left alone).
- sweep: one ordinary training run per (model, seed), skipped when finished, resumed
  when interrupted; `run_sweep` is what experiments/ablation.py calls.
- directions, landscape, curvature, landscape_probe, landscape_plots: loss surfaces along
  filter-normalised random directions, Hessian eigenvalues by Lanczos on Hessian-vector
  products, one run probed and saved, and their figures (Li et al. 2018; landscape.py).
- benchmarking: training throughput of train.py's feeds and programs (benchmark.py);
  hardware: datasheet peaks and XLA's cost figures; throughput: its table and plot.

Only the probe is imported here; the others pull in matplotlib and the training loop.
"""
from resnet_jax.analysis.gradient_flow import layer_gradient_norms, stage_gradient_norms, stage_of

__all__ = ['layer_gradient_norms', 'stage_gradient_norms', 'stage_of']
