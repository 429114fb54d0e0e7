"""The ResNet family: shapes, parameter counts against the references, plain twins,
batch-norm behaviour, bf16, and the registry's errors.

Large models are only traced (`jax.eval_shape`), never compiled.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.models import (
  LAYOUT_NAMES,
  MODEL_NAMES,
  BasicBlock,
  ConvolutionalBlock,
  IdentityBlock,
  ModelName,
  ResNet,
  check_input_size,
  create_model,
  is_model_name,
  parse_model_name,
  summarize,
)


def _size(count_tree):
  return sum(x.size for x in jax.tree_util.tree_leaves(count_tree))


@functools.lru_cache(maxsize=None)
def _traced(name, image_size, **overrides):
  """(logits, variables) of a named model as ShapeDtypeStructs."""
  model = create_model(name, **overrides)
  x = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)


def _intended_input(name):
  return 32 if name.startswith('cifar') else 224


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_every_named_model_output_shape_and_dtypes(name):
  logits, variables = _traced(name, _intended_input(name))
  classes = 10 if name.startswith('cifar') else 1000
  assert logits.shape == (2, classes)
  assert logits.dtype == jnp.float32
  assert set(variables) == {'params', 'batch_stats'}
  assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype('float32')}


def test_course_resnet50_at_64px_gives_six_logits():
  logits, _ = _traced('resnet50', 64, num_classes=6, layout='coursera')
  assert logits.shape == (2, 6)


def test_course_resnet50_last_feature_map_is_2x2():
  """So global average pooling equals the course's AveragePooling2D((2, 2)) + Flatten."""
  rows = summarize(create_model('resnet50', num_classes=6), (1, 64, 64, 3)).rows
  last_block = [r for r in rows if r.path == ('stage4_block3',)]
  assert last_block[0].output_shape == (1, 2, 2, 2048)


# name, input size, overrides, Keras-style count (params + batch stats), params only.
REFERENCE_COUNTS = [
    # The course's ResNet50(input_shape=(64, 64, 3), classes=6): 23,600,006 in Keras's
    # count, of which 23,546,886 trainable and 53,120 BN moving statistics.
    ('resnet50', 64, dict(num_classes=6, layout='coursera'), 23_600_006, 23_546_886),
    # keras.applications: ResNet50 / ResNet101 / ResNet152 (weights=None).
    ('resnet50', 224, dict(layout='keras'), 25_636_712, None),
    ('resnet101', 224, dict(layout='keras'), 44_707_176, None),
    ('resnet152', 224, dict(layout='keras'), 60_419_944, None),
    # keras.applications: ResNet50V2 / ResNet101V2 / ResNet152V2 (weights=None).
    ('resnet50v2', 224, {}, 25_613_800, None),
    ('resnet101v2', 224, {}, 44_675_560, None),
    ('resnet152v2', 224, {}, 60_380_648, None),
    # torchvision.models: parameters only (running statistics are buffers there).
    ('resnet18', 224, dict(layout='torchvision'), None, 11_689_512),
    ('resnet34', 224, dict(layout='torchvision'), None, 21_797_672),
    ('resnet50', 224, dict(layout='torchvision'), None, 25_557_032),
    ('resnet101', 224, dict(layout='torchvision'), None, 44_549_160),
]


@pytest.mark.parametrize('name,size,overrides,keras_count,params_count',
                         REFERENCE_COUNTS)
def test_parameter_counts_equal_the_references(name, size, overrides, keras_count,
                                               params_count):
  _, variables = _traced(name, size, **overrides)
  params, stats = _size(variables['params']), _size(variables['batch_stats'])
  if keras_count is not None:
    assert params + stats == keras_count
  if params_count is not None:
    assert params == params_count


@pytest.mark.parametrize('name,millions', [
    ('cifar_resnet20', 0.27), ('cifar_resnet32', 0.46), ('cifar_resnet44', 0.66),
    ('cifar_resnet56', 0.85), ('cifar_resnet110', 1.7)])
def test_cifar_parameter_counts_match_he_et_al_table6(name, millions):
  _, variables = _traced(name, 32)
  count = _size(variables['params']) / 1e6
  assert round(count, 1 if millions >= 1 else 2) == millions


def _without_projections(tree):
  return {k: _without_projections(v) if isinstance(v, dict) else v
          for k, v in tree.items() if not k.startswith('proj_')}


@pytest.mark.parametrize('residual,plain,overrides', [
    ('resnet50', 'plain50', {}),
    ('resnet18', 'plain18', {'layout': 'torchvision'}),
    ('cifar_resnet20', 'cifar_plain20', {}),
    ('cifar_resnet20', 'cifar_plain20', {'shortcut': 'projection'}),
    ('resnet50v2', 'plain50v2', {}),
    ('cifar_preact_resnet20', 'cifar_preact_plain20', {}),
    ('cifar_resnet20', 'cifar_plain20', {'design': 'bn_after_add', 'shortcut': 'conv_all'}),
])
def test_plain_twin_is_the_residual_net_minus_projections(residual, plain, overrides):
  size = _intended_input(residual)
  _, res_vars = _traced(residual, size, **overrides)
  _, plain_vars = _traced(plain, size, **overrides)
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
  for collection in ('params', 'batch_stats'):
    assert shapes(plain_vars[collection]) == shapes(
        _without_projections(res_vars[collection]))
  projection = sum(_size(block[k]) for block in res_vars['params'].values()
                   for k in block if k.startswith('proj_'))
  assert _size(plain_vars['params']) == _size(res_vars['params']) - projection
  if overrides.get('shortcut', 'zero_pad') != 'zero_pad' or not residual.startswith('cifar'):
    assert projection > 0
  else:  # option A shortcuts have no parameters
    assert projection == 0


def test_variable_names_follow_the_contract():
  _, variables = _traced('resnet50', 64, num_classes=6)
  params = variables['params']
  blocks = [f'stage{s}_block{b}' for s, n in enumerate((3, 4, 6, 3), 1)
            for b in range(1, n + 1)]
  assert set(params) == {'stem_conv', 'stem_bn', *blocks, 'head'}
  assert set(params['stage2_block1']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                          'proj_conv', 'proj_bn'}
  assert set(params['stage2_block2']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3'}
  assert set(params['stem_conv']) == {'kernel', 'bias'}
  assert params['stem_conv']['kernel'].shape == (7, 7, 3, 64)
  assert set(params['stem_bn']) == {'scale', 'bias'}
  assert set(variables['batch_stats']['stem_bn']) == {'mean', 'var'}
  assert params['head']['kernel'].shape == (2048, 6)
  _, variables = _traced('resnet18', 224, layout='torchvision')
  assert set(variables['params']['stage2_block1']) == {
      'conv1', 'bn1', 'conv2', 'bn2', 'proj_conv', 'proj_bn'}
  assert set(variables['params']['stem_conv']) == {'kernel'}  # no conv biases


@pytest.mark.parametrize('layout,conv1_stride', [
    ('coursera', 2), ('keras', 2), ('torchvision', 1)])
def test_stride_sits_on_the_layouts_conv(layout, conv1_stride):
  block = ConvolutionalBlock((4, 4, 8), kernel_size=3, strides=2, layout=layout)
  rows = {r.path: r.output_shape for r in summarize(block, (1, 8, 8, 3)).rows}
  assert rows[('conv1',)][1] == 8 // conv1_stride
  assert rows[('conv2',)][1] == 4
  assert rows[('proj_conv',)][1] == 4


@pytest.mark.parametrize('layout,after_pool', [
    ('coursera', 15), ('keras', 16), ('torchvision', 16)])
def test_stem_padding_per_layout(layout, after_pool):
  """7x7/2 conv on 3 zero pixels each side; max-pool 3x3/2 unpadded or padded by 1."""
  rows = summarize(create_model('resnet50', layout=layout), (1, 64, 64, 3)).rows
  shapes = {r.path: r.output_shape for r in rows}
  assert shapes[('stem_conv',)][1:3] == (32, 32)
  assert shapes[('stage1_block1', 'conv1')][1:3] == (after_pool, after_pool)


# Small models for the numerical tests below: compiled in a second or two.
_TINY = dict(stage_sizes=(1, 1), block='basic', widths=(4, 8), stem='cifar',
             stem_width=4, num_classes=3, layout='torchvision', shortcut='zero_pad')


def _init(model, x, seed=0):
  # The 'rbg' generator: threefry's random bits compile slowly on CPU.
  key = jax.random.key(seed, impl='rbg')
  return jax.jit(lambda: model.init(key, x, train=False))()


def _train_apply(model, x):
  return jax.jit(lambda v: model.apply(v, x, train=True, mutable=['batch_stats']))


def _eval_apply(model, x):
  return jax.jit(lambda v: model.apply(v, x, train=False))


def _shift_stats(variables, delta):
  return {'params': variables['params'],
          'batch_stats': jax.tree.map(lambda s: s + delta, variables['batch_stats'])}


def _images(n=4, size=8, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(0.5, 1.0, (n, size, size, 3)), jnp.float32)


def _loss(model, variables, x, labels, train):
  logits, _ = model.apply(variables, x, train=train, mutable=['batch_stats'])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


@pytest.mark.slow  # Compiles a ResNet or a training step.
@pytest.mark.parametrize('name', ['cifar_plain20', 'cifar_resnet20'])
def test_gradient_reaches_the_first_layer(name):
  """The stem's gradient is nonzero and predicts the loss change along a direction.

  The CIFAR family at depth 8 (one block per stage) keeps compilation short. ReLU
  kinks make the difference quotient inexact, hence the 10% tolerance.
  """
  model = create_model(name, stage_sizes=(1, 1, 1))
  x, labels = _images(n=8, size=8), jnp.arange(8) % 10
  variables = _init(model, x, seed=1)
  stats = variables['batch_stats']

  def loss(stem_kernel):
    params = dict(variables['params'], stem_conv={'kernel': stem_kernel})
    return _loss(model, {'params': params, 'batch_stats': stats}, x, labels,
                 train=True)

  loss_and_grad = jax.jit(jax.value_and_grad(loss))
  kernel = variables['params']['stem_conv']['kernel']
  _, grad = loss_and_grad(kernel)
  assert np.all(np.isfinite(grad)) and np.linalg.norm(grad) > 1e-4

  direction = np.random.default_rng(2).normal(size=kernel.shape).astype(np.float32)
  direction = direction / jnp.linalg.norm(direction)
  eps = 1e-3
  numeric = (loss_and_grad(kernel + eps * direction)[0]
             - loss_and_grad(kernel - eps * direction)[0]) / (2 * eps)
  np.testing.assert_allclose(numeric, jnp.vdot(grad, direction), rtol=0.1)


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_batch_norm_train_uses_batch_statistics_and_updates_them():
  model, x = ResNet(**_TINY), _images()
  variables = _init(model, x)
  train, evaluate = _train_apply(model, x), _eval_apply(model, x)
  # Perturb the stored statistics: train mode must not care, eval mode must.
  perturbed = _shift_stats(variables, 0.5)
  y_train, new = train(variables)
  np.testing.assert_allclose(y_train, train(perturbed)[0], rtol=1e-5, atol=1e-6)

  # Stem BN statistics move by (1 - momentum) toward the batch's (biased) moments.
  kernel = variables['params']['stem_conv']['kernel']
  h = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  momentum = 0.9  # torchvision layout
  np.testing.assert_allclose(new['batch_stats']['stem_bn']['mean'],
                             (1 - momentum) * h.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new['batch_stats']['stem_bn']['var'],
                             momentum + (1 - momentum) * h.var((0, 1, 2)), rtol=1e-4)

  # Eval mode: running statistics used and left unchanged.
  updated = {'params': variables['params'], 'batch_stats': new['batch_stats']}
  _, same = jax.jit(lambda v: model.apply(v, x, train=False, mutable=['batch_stats']))(
      updated)
  jax.tree.map(np.testing.assert_array_equal, same['batch_stats'], new['batch_stats'])
  assert not np.allclose(evaluate(updated), evaluate(perturbed), atol=1e-3)


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_frozen_bn_uses_and_keeps_running_statistics_in_train_mode():
  x = _images()
  frozen = ResNet(**_TINY, frozen_bn=True)
  variables = _shift_stats(_init(frozen, x), 0.25)
  y_train, new = _train_apply(frozen, x)(variables)
  y_eval = _eval_apply(frozen, x)(variables)
  np.testing.assert_allclose(y_train, y_eval, rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, new['batch_stats'],
               variables['batch_stats'])
  y_unfrozen, _ = _train_apply(ResNet(**_TINY), x)(variables)
  assert not np.allclose(y_unfrozen, y_eval, atol=1e-3)


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_bn_axis_name_synchronises_batch_statistics():
  """Two shards of 4 with sync BN give what one batch of 8 gives."""
  x = _images(n=8)
  model = ResNet(**_TINY)
  variables = _init(model, x)
  whole, whole_stats = _train_apply(model, x)(variables)
  synced = ResNet(**_TINY, bn_axis_name='batch')
  shards, shard_stats = jax.jit(jax.vmap(
      lambda xs: synced.apply(variables, xs, train=True, mutable=['batch_stats']),
      axis_name='batch'))(x.reshape(2, 4, *x.shape[1:]))
  np.testing.assert_allclose(shards.reshape(whole.shape), whole, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda s, w: np.testing.assert_allclose(s[0], w, rtol=1e-4, atol=1e-6),
               shard_stats, whole_stats)


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_bfloat16_compute_keeps_float32_params_and_is_close_to_float32():
  x = _images(n=4, size=16)
  f32 = create_model('cifar_resnet20', stage_sizes=(2, 2, 2))
  b16 = create_model('cifar_resnet20', stage_sizes=(2, 2, 2), dtype=jnp.bfloat16)
  variables = _init(f32, x)
  b16_shapes = jax.eval_shape(lambda: b16.init(jax.random.key(0), x, train=False))
  assert jax.tree.map(lambda a: a.dtype, b16_shapes) == jax.tree.map(
      lambda a: a.dtype, variables)

  def apply_capturing(v):
    return b16.apply(v, x, train=True, mutable=['batch_stats', 'intermediates'],
                     capture_intermediates=True)

  got, state = jax.jit(apply_capturing)(variables)
  assert got.dtype == jnp.bfloat16
  activations = jax.tree_util.tree_leaves(state['intermediates'])
  assert len(activations) > 30
  assert {a.dtype for a in activations} == {jnp.dtype('bfloat16')}
  want, want_stats = _train_apply(f32, x)(variables)
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=0.02 * scale)
  # Batch statistics stay float32 and close to float32's.
  got_mean = state['batch_stats']['stem_bn']['mean']
  assert got_mean.dtype == jnp.float32
  np.testing.assert_allclose(got_mean, want_stats['batch_stats']['stem_bn']['mean'],
                             rtol=0.02, atol=1e-3)


@pytest.mark.slow  # Compiles a ResNet or a training step.
def test_zero_init_last_bn_makes_blocks_start_as_the_identity():
  x = _images(n=2, size=6)
  x4 = jnp.concatenate([x, -x[..., :1]], axis=-1)
  block = IdentityBlock((2, 3, 4), layout='torchvision', zero_init_last_bn=True)
  variables = _init(block, x4)
  y, _ = _train_apply(block, x4)(variables)
  np.testing.assert_allclose(y, nn.relu(x4))
  params = _init(ResNet(**_TINY, zero_init_last_bn=True), x)['params']
  assert np.all(params['stage2_block1']['bn2']['scale'] == 0)
  assert np.all(params['stage2_block1']['bn1']['scale'] == 1)
  default = _init(ResNet(**_TINY), x)['params']
  assert np.all(default['stage2_block1']['bn2']['scale'] == 1)


def test_zero_pad_shortcut_subsamples_and_pads_channels():
  """Option A: with the residual branch zeroed, the block returns relu(shortcut)."""
  x = _images(n=2, size=7)
  block = BasicBlock(7, strides=2, shortcut='zero_pad', layout='torchvision',
                     zero_init_last_bn=True)
  variables = _init(block, x)
  assert not any(k.startswith('proj_') for k in variables['params'])
  got = _eval_apply(block, x)(variables)
  want = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
  np.testing.assert_allclose(got, nn.relu(want), atol=1e-6)


def test_create_model_rejects_unknown_names_layouts_and_fields():
  with pytest.raises(ConfigError, match='resnet51.*resnet50'):
    create_model('resnet51')
  with pytest.raises(ConfigError, match="layout='caffe'.*coursera"):
    create_model('resnet50', layout='caffe')
  with pytest.raises(ConfigError, match='num_clases'):
    create_model('resnet50', num_clases=6)
  with pytest.raises(ConfigError, match='shortcut'):
    create_model('resnet50', shortcut='zero_pad')
  assert set(LAYOUT_NAMES) == {'coursera', 'keras', 'torchvision'}
  assert len(MODEL_NAMES) == 32  # 20, plus 6 ResNetV2 and 6 pre-activation CIFAR names


def test_every_cifar_depth_6n_plus_2_is_a_name():
  for n in (1, 2, 4, 18):
    for kind, residual in (('resnet', True), ('plain', False)):
      name = f'cifar_{kind}{6 * n + 2}'
      assert is_model_name(name)
      assert parse_model_name(name) == ModelName(name, 'cifar', residual, 6 * n + 2)
      model = create_model(name, num_classes=3)
      # The registry's aliased CIFAR net with n blocks per stage, nothing else changed.
      alias = create_model(f'cifar_{kind}20', num_classes=3, stage_sizes=(n, n, n))
      assert model == alias and tuple(model.stage_sizes) == (n, n, n)
      assert model.residual == residual and parse_model_name(name).kind == (
          'residual' if residual else 'plain')
  assert create_model('cifar_resnet56') == create_model('cifar_resnet20', stage_sizes=(9, 9, 9))
  assert parse_model_name('plain50') == ModelName('plain50', 'imagenet', False, 50)
  assert all(is_model_name(name) for name in MODEL_NAMES)


@pytest.mark.parametrize('name', ['cifar_resnet9', 'cifar_plain2', 'cifar_resnet0', 'resnet26',
                                  'plain20', 'cifar_resnet020', 'vgg16', ''])
def test_names_outside_the_grammar_are_config_errors(name):
  assert not is_model_name(name)
  with pytest.raises(ConfigError, match=repr(name)):
    create_model(name)


@pytest.mark.parametrize('name,smallest', [('resnet50', 32), ('resnet18', 32),
                                           ('cifar_resnet20', 4)])
def test_check_input_size(name, smallest):
  for layout in LAYOUT_NAMES:
    model = create_model(name, layout=layout)
    check_input_size(model, smallest)
    logits, _ = _traced(name, smallest, layout=layout)  # it really runs there
    assert logits.shape[0] == 2
    with pytest.raises(ConfigError, match=f'image_size={smallest - 1}.*>= {smallest}'):
      check_input_size(model, smallest - 1)


@pytest.mark.parametrize('num_classes', [0, -3, 6.5, '6', True, None])
def test_create_model_refuses_a_num_classes_that_is_not_a_positive_int(num_classes):
  with pytest.raises(ConfigError, match=r'num_classes=.*expected a positive int') as raised:
    create_model('cifar_resnet20', num_classes=num_classes)
  assert repr(num_classes) in str(raised.value)


def test_create_model_takes_a_numpy_integer_num_classes():
  assert create_model('cifar_resnet20', num_classes=np.int64(6)).num_classes == 6
