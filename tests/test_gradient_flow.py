"""The per-layer gradient-norm probe and its per-stage aggregation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from resnet_jax.ablation import gradient_flow
from resnet_jax.data import load_dataset
from resnet_jax.data.channel_stats import channel_stats
from resnet_jax.models import create_model
from resnet_jax.train.preprocess import preprocess


@pytest.fixture(scope='module')
def digits_batch():
  """Eight real digits at their native 8x8, standardised as the ablation trains them."""
  dataset = load_dataset('digits', image_size=8)
  mean, std = channel_stats(dataset.train)
  index = np.arange(8) * 97  # Spread over the split, several classes.
  return {'image': preprocess(jnp.asarray(dataset.train.images[index]), 'standardize', mean, std),
          'label': jnp.asarray(dataset.train.labels[index])}


def tiny_resnet(residual=True):
  """A CIFAR ResNet-8 (one block per stage): every kind of layer, cheap to compile."""
  return create_model('cifar_resnet20' if residual else 'cifar_plain20', stage_sizes=(1, 1, 1))


@pytest.mark.slow  # Compiles a probe of every layer.
def test_one_finite_norm_per_layer_equal_to_a_direct_computation(digits_batch):
  model = tiny_resnet()
  variables = model.init(jax.random.key(0), digits_batch['image'], train=False)
  norms = jax.jit(gradient_flow.layer_gradient_norms, static_argnums=(0, 3))(
      model, variables, digits_batch, True)

  # Layers are the modules that own parameters: conv kernels, BN scale+bias, the head.
  flat = traverse_util.flatten_dict(variables['params'])
  layers = {'/'.join(path[:-1]) for path in flat}
  assert set(norms) == layers
  assert {'stem_conv', 'stem_bn', 'stage1_block1/conv1', 'stage3_block1/bn2', 'head'} <= layers

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                            digits_batch['image'], train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, digits_batch['label']).mean()

  grads = traverse_util.flatten_dict(jax.grad(loss)(variables['params']))
  for layer in layers:
    leaves = [np.asarray(g, np.float64).ravel() for path, g in grads.items()
              if '/'.join(path[:-1]) == layer]
    expected = np.sqrt(sum(np.sum(leaf ** 2) for leaf in leaves))
    assert math.isfinite(float(norms[layer])) and float(norms[layer]) > 0
    np.testing.assert_allclose(float(norms[layer]), expected, rtol=1e-4, err_msg=layer)


@pytest.mark.slow  # Compiles a probe of every layer.
def test_inference_mode_uses_running_statistics(digits_batch):
  model = tiny_resnet()
  variables = model.init(jax.random.key(1), digits_batch['image'], train=False)
  train_norms = gradient_flow.layer_gradient_norms(model, variables, digits_batch, train=True)
  eval_norms = gradient_flow.layer_gradient_norms(model, variables, digits_batch, train=False)
  assert set(train_norms) == set(eval_norms)
  # Batch statistics and running statistics are different networks: different gradients.
  assert abs(float(train_norms['stem_conv']) - float(eval_norms['stem_conv'])) > 1e-3


def test_stage_aggregation_is_the_rms_of_layer_norms_in_network_order():
  layers = {'head': 2.0, 'stage2_block1/conv1': 3.0, 'stem_conv': 1.0, 'stage1_block1/conv1': 1.0,
            'stage1_block2/conv2': 7.0, 'stem_bn': 7.0, 'stage10_block1/bn1': 5.0}
  stages = gradient_flow.stage_gradient_norms(layers)
  assert list(stages) == ['stem', 'stage1', 'stage2', 'stage10', 'head']
  assert stages['stem'] == pytest.approx(5.0)  # sqrt((1 + 49) / 2)
  assert stages['stage1'] == pytest.approx(5.0)
  assert stages['stage2'] == pytest.approx(3.0)
  assert stages['head'] == pytest.approx(2.0)
  assert gradient_flow.stage_of('stage3_block12/proj_bn') == 'stage3'


@pytest.mark.slow
def test_deep_plain_net_first_stage_gradient_against_its_residual_twin(digits_batch):
  """ResNet-56 against plain-56 at initialisation, for three seeds.

  Measured here (digits, batch 8): with BatchNorm's running statistics -- at
  initialisation an identity, so this is the network without normalisation -- the
  plain net's first-stage gradient is thousands of times smaller than its residual
  twin's: the vanishing gradient of the course. With batch statistics (training mode,
  the gradient SGD follows) it is the other way round, by a factor of hundreds: deep
  plain nets with BatchNorm have *exploding* gradients at initialisation (Yang et al.
  2019), which the skip connections prevent. Both are shown by gradient_flow.png.
  """
  # Op by op: twelve eager probes of a 56-layer net cost less CPU than compiling four.
  probe = gradient_flow.layer_gradient_norms
  plain, residual = create_model('cifar_plain56'), create_model('cifar_resnet56')
  for seed in (0, 1, 2):
    stage1 = {}
    for name, model in (('plain', plain), ('residual', residual)):
      variables = model.init(jax.random.key(seed), digits_batch['image'], train=False)
      for train in (False, True):
        norms = gradient_flow.stage_gradient_norms(probe(model, variables, digits_batch, train))
        assert all(math.isfinite(v) for v in norms.values())
        stage1[name, train] = norms['stage1']
    assert stage1['plain', False] * 100 < stage1['residual', False], (seed, stage1)
    assert stage1['plain', True] > 10 * stage1['residual', True], (seed, stage1)


def test_final_bn_of_preact_nets_counts_in_the_last_stage():
  norms = gradient_flow.stage_gradient_norms({'stem_conv': 1.0, 'stage1_block1/conv1': 2.0,
                                              'stage2_block1/conv1': 3.0, 'post_bn': 4.0,
                                              'head': 5.0})
  assert list(norms) == ['stem', 'stage1', 'stage2', 'head']
  assert norms['stage2'] == pytest.approx(((9 + 16) / 2) ** 0.5)
