"""resnet_jax.analysis."""
