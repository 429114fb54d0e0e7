"""Test-wide settings. Keras is only a numerical reference here, on the JAX backend."""
import os
import shutil
import tempfile

# Must precede any `import keras`.
os.environ.setdefault("KERAS_BACKEND", "jax")
# Tests run on the CPU even where an accelerator is present, so results are reproducible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole session, subprocess runs and both xdist
# workers included (they inherit the environment): a tiny train.py run compiles once per
# device count, not once per worker. Made and removed by the controlling process.
JIT_CACHE_VARIABLE = 'RESNET_JAX_TEST_JIT_CACHE'


def pytest_configure(config):
  if not hasattr(config, 'workerinput') and JIT_CACHE_VARIABLE not in os.environ:
    config.jit_cache_dir = tempfile.mkdtemp(prefix='resnet_jax_test_jit_cache_')
    os.environ[JIT_CACHE_VARIABLE] = config.jit_cache_dir
  if JIT_CACHE_VARIABLE in os.environ:
    # The tests in these processes share it too: many files compile the same small
    # programs (the tiny nets' steps) under new closures, which jit's own cache cannot
    # recognise and a cache keyed by the compiled program does.
    import jax
    jax.config.update('jax_compilation_cache_dir', os.environ[JIT_CACHE_VARIABLE])


def pytest_unconfigure(config):
  directory = getattr(config, 'jit_cache_dir', None)
  if directory:
    shutil.rmtree(directory, ignore_errors=True)
    os.environ.pop(JIT_CACHE_VARIABLE, None)
