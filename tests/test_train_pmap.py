"""Four CPU devices (a subprocess with --xla_force_host_platform_device_count=4) against one."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import helpers as fx
from resnet_jax.train import checkpoint as checkpoint_lib, loop

pytestmark = pytest.mark.slow  # Subprocess runs on 4 host devices.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the 4-device subprocess; prints one JSON line of findings.
_FOUR_DEVICE_SCRIPT = textwrap.dedent('''
    import functools, json, sys
    import jax, numpy as np
    sys.path.insert(0, 'tests')
    import helpers as fx
    from resnet_jax.data import pipeline
    from resnet_jax.errors import ConfigError
    from resnet_jax.train import devices, loop, optim, run_shape, steps
    from resnet_jax.train.state import create_train_state

    assert jax.local_device_count() == 4, jax.devices()
    found = {}
    # 1. A whole run with synchronised BN, for comparison with one device.
    config = fx.tiny_config(**{'model.sync_bn': True})
    result = loop.train_and_evaluate(config, sys.argv[1], model=fx.TinyNet(bn_axis_name='batch'),
                                     dataset=fx.make_dataset())
    found['eval_accuracy'] = result['eval_accuracy']

    # 2. Per-device BN: after a few steps every device holds the same batch_stats and params.
    model, config = fx.TinyNet(), fx.tiny_config()
    tx, _ = fx.create_optimizer(config, steps_per_epoch=8)
    state = create_train_state(model, tx, (8, 8, 3), seed=0)
    state = devices.replicate_on_devices(jax.tree.map(np.asarray, state), jax.local_devices())
    step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx,
                                      settings=steps.StepSettings(num_classes=3)),
                    axis_name='batch')
    layout = run_shape.batch_layout(16, jax.local_devices(), 'train.batch_size', 64)
    data = pipeline.train_dataset(fx.make_split(64, 0), layout, pipeline.Recipe(8), 0, 3)
    shapes = []
    for batch in pipeline.iterate(data, 4):
      shapes.append(list(batch['image'].shape))
      state, _ = step(state, devices.shard_leading_axis(batch, jax.local_devices()))
    stats = [np.asarray(x) for x in jax.tree.leaves(state.batch_stats)]
    params = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    found['batch_shapes'] = shapes
    found['stats_equal'] = all((x == x[0]).all() for x in stats)
    found['params_equal'] = all((x == x[0]).all() for x in params)
    found['stats_moved'] = bool(np.abs(stats[0][0]).sum() > 0)

    # 3. A global batch the devices cannot split.
    try:
      run_shape.batch_layout(6, jax.local_devices(), 'train.batch_size', 64)
    except ConfigError as error:
      found['indivisible'] = str(error)
    print('FOUND ' + json.dumps(found))
''')


@pytest.fixture(scope='module')
def four_devices(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('four')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, '-c', _FOUR_DEVICE_SCRIPT, str(workdir)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('FOUND ')]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return workdir, json.loads(lines[-1][len('FOUND '):])


def _latest_params(workdir):
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=10)
  try:
    step = checkpointer.latest_step()
    return step, checkpointer.read(step)[0]
  finally:
    checkpointer.close()


def test_four_devices_match_one_device_with_the_same_global_batch(four_devices, tmp_path):
  workdir, found = four_devices
  result = loop.train_and_evaluate(fx.tiny_config(**{'model.sync_bn': True}), str(tmp_path),
                                   model=fx.TinyNet(bn_axis_name='batch'),
                                   dataset=fx.make_dataset())
  step4, four = _latest_params(workdir)  # Written by 4 devices, restored on 1.
  step1, one = _latest_params(tmp_path)
  assert step4 == step1 == 24
  for collection in ('params', 'batch_stats'):
    for a, b in zip(jax.tree.leaves(four[collection]), jax.tree.leaves(one[collection]),
                    strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert found['eval_accuracy'] == pytest.approx(result['eval_accuracy'])


def test_batch_stats_and_params_stay_identical_across_devices(four_devices):
  _, found = four_devices
  assert found['stats_equal'] and found['params_equal'] and found['stats_moved']


def test_batches_have_the_local_device_axis(four_devices):
  _, found = four_devices
  assert found['batch_shapes'] == [[4, 4, 8, 8, 3]] * 3


def test_indivisible_global_batch_names_the_field_and_the_devices(four_devices):
  _, found = four_devices
  assert 'config.train.batch_size=6 is not divisible by the 4 devices' in found['indivisible']
