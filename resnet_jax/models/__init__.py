"""resnet_jax.models."""
