"""resnet_jax.weights."""
