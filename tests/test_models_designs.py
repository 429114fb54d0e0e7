"""Block designs and shortcut options as data (models/designs.py): what each puts where,
the pre-activation CIFAR nets of He et al. 2016 and their names. The numbers against
Keras are in test_models_blocks_keras.py (every Fig. 4 placement) and
test_models_preact_keras.py (ResNetV2)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.models import (
  DESIGN_NAMES,
  SHORTCUTS,
  BasicBlock,
  ModelName,
  ResNet,
  create_model,
  get_design,
  is_model_name,
  parse_model_name,
)


def _variables(name, size=32, **overrides):
  model = create_model(name, **overrides)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                           train=False))


def _size(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('name,millions', [
    ('cifar_preact_resnet110', 1.7), ('cifar_preact_resnet164', 1.7),
    pytest.param('cifar_preact_resnet1001', 10.2, marks=pytest.mark.slow)])
def test_preact_cifar_counts_match_he_et_al_2016(name, millions):
  """Table 5 of the 2016 paper: 1.7M (ResNet-164), 10.2M (ResNet-1001) weights; the
  paper counts conv and classifier weights (BN's scale and shift, one pair per
  channel, are as many as the moving statistics)."""
  variables = _variables(name)
  count = _size(variables['params']) - _size(variables['batch_stats'])
  assert round(count / 1e6, 1) == millions


def test_preact_cifar_nets_block_types_and_names():
  assert parse_model_name('cifar_preact_resnet110') == ModelName(
      'cifar_preact_resnet110', 'cifar', True, 110, True)
  assert parse_model_name('cifar_preact_plain1001').preactivation
  assert create_model('cifar_preact_resnet110').block == 'basic'
  assert create_model('cifar_preact_resnet164').block == 'bottleneck'
  assert create_model('cifar_preact_resnet1001').stage_sizes == (111, 111, 111)
  assert create_model('cifar_preact_resnet56') == create_model(
      'cifar_preact_resnet20', stage_sizes=(9, 9, 9))
  assert parse_model_name('resnet50v2') == ModelName('resnet50v2', 'imagenet', True, 50, True)
  for name in ('cifar_preact_resnet170', 'cifar_preact_resnet22', 'preact_resnet20',
               'resnet18v2', 'cifar_resnet20v2'):
    assert not is_model_name(name)
  with pytest.raises(ConfigError, match='9n \\+ 2.*cifar_preact_resnet245'):
    create_model('cifar_preact_resnet250')


def test_full_preact_has_no_stem_bn_and_a_final_bn():
  params = _variables('cifar_preact_resnet20')['params']
  assert 'stem_bn' not in params and set(params['post_bn']) == {'scale', 'bias'}
  assert set(params['stage1_block1']) == {'preact_bn', 'conv1', 'bn1', 'conv2'}
  params = _variables('cifar_resnet20', design='bn_after_add')['params']
  assert set(params['stage1_block1']) == {'conv1', 'bn1', 'conv2', 'add_bn'}


@pytest.mark.parametrize('shortcut,block2,block4', [
    # cifar net of depth 14: stage2_block1 changes shape, stage1_block2 does not.
    ('zero_pad', set(), set()),
    ('projection', set(), {'proj_conv', 'proj_bn'}),
    ('projection_all', {'proj_conv', 'proj_bn'}, {'proj_conv', 'proj_bn'}),
    ('conv_all', {'proj_conv'}, {'proj_conv'}),
    ('scaled', set(), set()),
])
def test_shortcut_options_put_projections_where_they_say(shortcut, block2, block4):
  params = _variables('cifar_resnet14', shortcut=shortcut)['params']
  shortcut_layers = lambda block: {k for k in params[block] if k.startswith('proj')}
  assert shortcut_layers('stage1_block2') == block2
  assert shortcut_layers('stage2_block1') == block4
  assert set(SHORTCUTS) == {'zero_pad', 'projection', 'projection_all', 'conv_all', 'scaled'}


def test_scaled_shortcut_halves_both_branches():
  """relu_preact has nothing after the addition: the block's output is 0.5 F(x) + 0.5 x,
  and its plain twin (same variables) gives F(x)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 4)), jnp.float32)
  scaled = BasicBlock(4, design='relu_preact', shortcut='scaled', layout='torchvision')
  variables = scaled.init(jax.random.key(1), x, train=False)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # BN shift, nonzero output
  branch = BasicBlock(4, design='relu_preact', residual=False, layout='torchvision')
  got = scaled.apply(variables, x, train=False)
  want = 0.5 * branch.apply(variables, x, train=False) + 0.5 * x
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_designs_and_shortcuts_are_refused_by_name():
  with pytest.raises(ConfigError, match="design='fancy'"):
    ResNet(stage_sizes=(1,), design='fancy')
  with pytest.raises(ConfigError, match="'fancy'.*expected one of"):
    get_design('fancy')
  with pytest.raises(ConfigError, match='shortcut'):
    create_model('cifar_resnet20', shortcut='gated')
  assert DESIGN_NAMES == ('original', 'bn_after_add', 'relu_before_add', 'relu_preact',
                          'full_preact')


def test_config_fields_select_design_and_shortcut():
  from resnet_jax.train import base_config, config as config_lib, setup
  config = base_config()
  config.model.update(name='cifar_resnet20', layout='torchvision', num_classes=10,
                      block_design='relu_before_add', shortcut='projection_all')
  config.data.update(name='digits', image_size=8)
  config_lib.validate_config(config)
  model = setup.build_model(config)
  assert (model.design, model.shortcut) == ('relu_before_add', 'projection_all')
  config.model.block_design = ''
  assert setup.build_model(config).design == 'original'  # '' keeps the model's own
  config.model.block_design = 'preact'
  with pytest.raises(ConfigError, match=r"config\.model\.block_design='preact'.*full_preact"):
    config_lib.validate_config(config)

