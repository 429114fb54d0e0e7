"""Precise BN: re-estimated statistics are the batches' own, change no parameter, resume exactly."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import helpers as fx
from resnet_jax.errors import ConfigError
from resnet_jax.models import create_model
from resnet_jax.train import bn_recompute, checkpoint as checkpoint_lib, devices, loop
from resnet_jax.train.state import create_train_state
from resnet_jax.train.steps import StepSettings

_SCALE = lambda images: images.astype(jnp.float32) / 255.0
_SETTINGS = StepSettings(num_classes=fx.NUM_CLASSES, preprocess='scale')


def _small_resnet(**overrides):
  return create_model('cifar_resnet20', stage_sizes=(1, 1, 1), num_classes=fx.NUM_CLASSES,
                      **overrides)


def _replicated_state(model, batch_stats=None):
  state = create_train_state(model, optax.sgd(0.1), (fx.IMAGE_SIZE, fx.IMAGE_SIZE, 3), seed=0)
  if batch_stats is not None:
    state = state.replace(batch_stats=batch_stats)
  return devices.replicate_on_devices(jax.tree.map(np.asarray, state), jax.local_devices()[:1])


def _device_batches(images_list):
  return [devices.shard_leading_axis({'image': images[None]}, jax.local_devices()[:1])
          for images in images_list]


@pytest.mark.slow  # Whole training runs.
def test_statistics_are_the_mean_of_each_batch_s_own():
  model = _small_resnet()
  state = _replicated_state(model)
  split = fx.make_split(16, seed=3)
  halves = [split.images[:8], split.images[8:]]
  fn = bn_recompute.make_batch_statistics_fn(model, _SETTINGS, jax.local_devices()[:1])
  new = bn_recompute.recompute_batch_stats(state, fn, _device_batches(halves))

  # The stem BN normalises the stem conv's output: its statistics per batch, by hand.
  variables = {'params': jax.tree.map(lambda x: x[0], state.params),
               'batch_stats': jax.tree.map(lambda x: x[0], state.batch_stats)}
  means, variances = [], []
  for images in halves:
    _, captured = model.apply(variables, _SCALE(images), train=True, mutable=['batch_stats',
                                                                              'intermediates'],
                              capture_intermediates=True)
    conv_out = captured['intermediates']['stem_conv']['__call__'][0]
    means.append(conv_out.mean((0, 1, 2)))
    variances.append(conv_out.var((0, 1, 2)))
  stem = jax.tree.map(lambda x: np.asarray(x[0]), new.batch_stats['stem_bn'])
  np.testing.assert_allclose(stem['mean'], np.mean(means, 0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stem['var'], np.mean(variances, 0), rtol=1e-5, atol=1e-6)
  # Every layer was re-estimated, none left at its initial zeros/ones.
  for leaf in jax.tree.leaves(new.batch_stats['stage3_block1']):
    assert not np.allclose(leaf, 0.0) and not np.allclose(leaf, 1.0)


@pytest.mark.slow  # Whole training runs.
def test_frozen_statistics_stay_bit_identical():
  model = _small_resnet(frozen_bn=True)
  rng = np.random.default_rng(0)
  template = _replicated_state(model).batch_stats
  frozen = jax.tree.map(lambda x: rng.uniform(0.5, 2.0, x.shape[1:]).astype(np.float32),
                        template)
  state = _replicated_state(model, frozen)
  fn = bn_recompute.make_batch_statistics_fn(model, _SETTINGS, jax.local_devices()[:1])
  images = fx.make_split(24, seed=4).images
  new = bn_recompute.recompute_batch_stats(state, fn, _device_batches(
      [images[:8], images[8:16], images[16:]]))
  for a, b in zip(jax.tree.leaves(new.batch_stats), jax.tree.leaves(frozen), strict=True):
    np.testing.assert_array_equal(np.asarray(a)[0], b)


def test_a_model_without_a_layout_is_refused():
  with pytest.raises(ConfigError, match='bn_recompute_batches.*TinyNet'):
    bn_recompute.batch_statistics_model(fx.TinyNet())


def _run(workdir, **overrides):
  config = fx.tiny_config(**overrides)
  return loop.train_and_evaluate(config, str(workdir), model=_small_resnet(),
                                 dataset=fx.make_dataset())


def _latest_state(workdir):
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), keep=10)
  try:
    state, _ = checkpointer.read(checkpointer.latest_step())
  finally:
    checkpointer.close()
  return state


@pytest.fixture(scope='module')
def recomputed_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('recomputed')
  return workdir, _run(workdir, **{'train.bn_recompute_batches': 2})


@pytest.mark.slow  # Whole training runs.
def test_training_is_unchanged_and_only_the_statistics_differ(recomputed_run, tmp_path):
  workdir, _ = recomputed_run
  _run(tmp_path, **{'train.bn_recompute_batches': 0})
  with_recompute, without = _latest_state(workdir), _latest_state(tmp_path)
  for a, b in zip(jax.tree.leaves(with_recompute['params']), jax.tree.leaves(without['params']),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  differ = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(with_recompute['batch_stats']), jax.tree.leaves(without['batch_stats']),
      strict=True)]
  assert all(differ)


@pytest.mark.slow  # Whole training runs.
def test_a_resumed_run_re_estimates_what_an_unbroken_one_does(recomputed_run, tmp_path):
  reference, first = recomputed_run
  workdir = tmp_path / 'resumed'
  shutil.copytree(reference, workdir)
  for step in (16, 24):
    shutil.rmtree(workdir / 'checkpoints' / str(step))
  result = _run(workdir, **{'train.bn_recompute_batches': 2})
  assert result['resumed_from'] == 8
  assert result['eval_accuracy'] == first['eval_accuracy']
  for a, b in zip(jax.tree.leaves(_latest_state(workdir)), jax.tree.leaves(
      _latest_state(reference)), strict=True):
    np.testing.assert_array_equal(a, b)
