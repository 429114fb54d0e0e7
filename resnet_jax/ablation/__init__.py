"""resnet_jax.ablation: the residual-against-plain study (He et al. 2015, 2016).

For experiments/ablation.py (and experiments/landscape.py, which trains its runs with it):
- sweep: one ordinary training run per (model, seed), skipped when finished, resumed
  when interrupted; `run_sweep` is what experiments/ablation.py calls.
- results: finished runs of a sweep -> rows -> results.csv / results.md.
- plots: training_error.png (He et al. 2015, Figure 6) and gradient_flow.png (matplotlib
  Figures, no pyplot: the caller's backend is left alone).
- gradient_flow: per-layer gradient-norm probe (pure, jittable) and per-stage aggregation.

Nothing is imported here: the modules pull in matplotlib and the training loop.
"""
