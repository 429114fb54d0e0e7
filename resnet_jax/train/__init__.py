"""resnet_jax.train."""
