"""Gradient-flow probes: how large the loss gradient is at each layer of a network.

Comparing a plain network with its residual twin layer by layer is where
vanishing (or exploding) gradients become visible: without skip connections
the signal that reaches the first stage has travelled through every layer.

`layer_gradient_norms` is a pure function of (model, variables, batch): it can
be wrapped in `jax.jit` with the model as a static argument, e.g.
`jax.jit(layer_gradient_norms, static_argnums=0)`.
"""
import re

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

# Top-level module names of the ResNet family: `stem_conv`, `stage2_block3`, `head`.
_STAGE_PATTERN = re.compile(r'^(stage\d+)_')


def cross_entropy_loss(logits, labels):
  """Mean softmax cross-entropy against integer labels, computed in float32."""
  logits = logits.astype(jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def layer_gradient_norms(model, variables, batch, train=True):
  """L2 norm of the loss gradient with respect to each layer's parameters.

  Args:
    model: a flax.linen Module called as `model.apply(vars, x, train=...)`.
    variables: {'params': ..., 'batch_stats': ...} ('batch_stats' optional).
    batch: {'image': float [N, H, W, C] (preprocessed), 'label': int [N]}.
    train: True evaluates the gradient the optimizer would see (batch-norm
      uses the statistics of this batch; the updated running statistics are
      discarded); False uses the running statistics.

  Returns:
    {layer path: float32 scalar}, one entry per module that owns parameters
    directly, e.g. 'stage1_block2/conv1' (kernel and bias taken together).
  """
  params = variables['params']
  others = {k: v for k, v in variables.items() if k != 'params'}

  def loss_fn(p):
    full = {'params': p, **others}
    if train and 'batch_stats' in others:
      logits, _ = model.apply(full, batch['image'], train=True, mutable=['batch_stats'])
    else:
      logits = model.apply(full, batch['image'], train=train)
    return cross_entropy_loss(logits, batch['label'])

  grads = jax.grad(loss_fn)(params)
  squares = {}
  for path, leaf in traverse_util.flatten_dict(grads).items():
    layer = '/'.join(str(k) for k in path[:-1])
    squares[layer] = squares.get(layer, 0.0) + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
  return {layer: jnp.sqrt(total) for layer, total in squares.items()}


def stage_of(layer_path):
  """The stage a layer belongs to: 'stem', 'stage1', ..., 'head' (else its top-level name)."""
  top = layer_path.split('/')[0]
  match = _STAGE_PATTERN.match(top)
  if match:
    return match.group(1)
  if top.startswith('stem'):
    return 'stem'
  return top


def stage_gradient_norms(layer_norms):
  """Aggregates per-layer norms into one number per stage, in network order.

  The aggregate is the root mean square of the stage's layer norms: a typical
  layer's gradient, comparable across depths (a sum would grow with the number
  of layers in the stage).

  Returns:
    {stage: float}, ordered stem, stage1, stage2, ..., then anything else
    (the head) in the order first seen; a pre-activation net's post_bn counts in its
    last stage.
  """
  groups = {}
  for layer, norm in layer_norms.items():
    groups.setdefault(stage_of(layer), []).append(float(norm))
  # The final BN of a pre-activation net closes its last stage (Keras's ResNetV2 counts
  # post_bn with conv5): every design then has the same stages on a figure's axis.
  stages = sorted((s for s in groups if _stage_rank(s)[0] == 1), key=_stage_rank)
  if 'post_bn' in groups and stages:
    groups[stages[-1]].extend(groups.pop('post_bn'))
  return {stage: (sum(n * n for n in groups[stage]) / len(groups[stage])) ** 0.5
          for stage in sorted(groups, key=_stage_rank)}


def _stage_rank(stage):
  if stage == 'stem':
    return (0, 0)
  match = re.fullmatch(r'stage(\d+)', stage)
  if match:
    return (1, int(match.group(1)))
  return (2, 0)
