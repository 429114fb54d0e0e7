"""resnet_jax.landscapes: loss landscapes and curvature of trained runs (Li et al. 2018).

For experiments/landscape.py, which probes the runs of an ablation sweep:
- directions: seeded, filter-normalised random directions in parameter space;
- surface: the loss and accuracy on a grid around trained weights, and along a line;
- curvature: Hessian-vector products and Lanczos eigenvalues, without the Hessian;
- probe: one run's checkpoint probed (surface, curvature map, interpolation), saved as .npz;
- plots: the figures of a probe and the residual-against-plain panel (no pyplot).

Nothing is imported here: the modules pull in matplotlib and the training code.
"""
