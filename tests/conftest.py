"""Test-wide settings. Keras is only a numerical reference here, on the JAX backend."""
import os

# Must precede any `import keras`.
os.environ.setdefault("KERAS_BACKEND", "jax")
# Tests run on the CPU even where an accelerator is present, so results are reproducible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
