"""resnet_jax: residual networks and their plain twins in JAX/Flax."""
