"""resnet_jax.data."""
