"""Where a training step's time goes, by layer type: each layer timed alone on its shapes.

The model is traced once (abstractly, nothing computed) with `nn.intercept_methods`,
recording every nn.Conv, nn.BatchNorm and nn.Dense call with its input shape and call
arguments. Each distinct (layer, input shape) is then compiled on its own and its
forward + backward (gradients with respect to its input and its parameters, batch
statistics updated in training mode) timed; a layer's cost per step is that time times
the number of calls with that shape.

Why this and not a profiler trace: it needs no trace files, no profiler plugin and no
parsing of XLA's fused-op names (which change between versions and backends), and it
attributes time to the layer types a reader changes (a conv formulation, batch norm).
What it cannot see: what XLA fuses across layers in the whole step, and what is not a
layer (activations, additions, pooling, loss, the optimizer update, input handling).
Compare the sum with the measured step time: the difference is that remainder.
"""
import dataclasses
import statistics
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.models import conv as conv_lib

LAYER_TYPES = (nn.Conv, nn.BatchNorm, nn.Dense)


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One distinct layer shape: what it is, how often a step calls it, what it costs.

  Attributes:
    kind: the layer type, e.g. 'conv 3x3 s1 [im2col]', 'batch_norm train', 'dense'.
    detail: the shape, e.g. '32x2x2x512 -> 512'.
    calls: calls per step with this shape.
    ms_each: median forward + backward milliseconds of one call.
  """
  kind: str
  detail: str
  calls: int
  ms_each: float

  @property
  def ms_per_step(self) -> float:
    return self.calls * self.ms_each


@dataclasses.dataclass(frozen=True)
class _Call:
  module: nn.Module
  input_shape: tuple
  dtype: Any
  kwargs: tuple


def layer_calls(model: nn.Module, input_shape: Sequence[int], *, train: bool = True,
                dtype=jnp.float32) -> list:
  """Every conv, batch norm and dense call of one forward pass, in order (abstract trace)."""
  calls = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(module, LAYER_TYPES):
      calls.append(_Call(module.clone(parent=None, name=None), tuple(args[0].shape),
                         args[0].dtype, tuple(sorted(kwargs.items()))))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=train),
                   jax.ShapeDtypeStruct(tuple(input_shape), dtype))
  return calls


def describe(call: _Call) -> tuple[str, str]:
  """(kind, detail) of a recorded call."""
  module, shape = call.module, call.input_shape
  dims = 'x'.join(str(d) for d in shape)
  if isinstance(module, nn.Conv):
    kernel = tuple(module.kernel_size)
    strides = module.strides if isinstance(module.strides, int) else (module.strides or (1,))[0]
    fn = module.conv_general_dilated
    impl = 'xla' if fn is None else fn.keywords.get('conv_impl', 'custom')
    pads = conv_lib.explicit_padding(shape[1:3], kernel, (strides, strides), (1, 1),
                                      nn.linear.canonicalize_padding(module.padding, 2))
    formulation = conv_lib.formulation_for(impl, kernel, shape[1:3], shape[3], pads)
    kind = f'conv {kernel[0]}x{kernel[1]} s{strides} [{formulation}]'
    return kind, f'{dims} -> {module.features}'
  if isinstance(module, nn.BatchNorm):
    running = dict(call.kwargs).get('use_running_average', module.use_running_average)
    return f"batch_norm {'eval' if running else 'train'}", dims
  return type(module).__name__.lower(), f'{dims} -> {module.features}'


def time_call(call: _Call, *, repeats: int = 5, seed: int = 0) -> float:
  """Median milliseconds of one jitted forward + backward of the call, after compiling."""
  kwargs = dict(call.kwargs)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(call.input_shape), call.dtype)
  variables = call.module.init(jax.random.key(seed), x, **kwargs)
  params = variables['params']
  others = {k: v for k, v in variables.items() if k != 'params'}
  out_shape = jax.eval_shape(
      lambda: call.module.apply(variables, x, mutable=list(others), **kwargs)[0])
  cotangent = jnp.asarray(rng.standard_normal(out_shape.shape), out_shape.dtype)

  def loss(p, inputs):
    out, _ = call.module.apply({'params': p, **others}, inputs, mutable=list(others),
                               **kwargs)
    return jnp.sum(out * cotangent)

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  jax.block_until_ready(step(params, x))
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(params, x))
    seconds.append(time.perf_counter() - start)
  return 1e3 * statistics.median(seconds)


def profile_layers(model: nn.Module, input_shape: Sequence[int], *, train: bool = True,
                   dtype=jnp.float32, repeats: int = 5) -> list[LayerCost]:
  """The cost of every distinct layer shape of `model`, most expensive per step first."""
  groups = {}
  for call in layer_calls(model, input_shape, train=train, dtype=dtype):
    kind, detail = describe(call)
    # Calls of one kind on one shape cost the same (initialisers and names aside).
    groups.setdefault((kind, detail, call.kwargs), []).append(call)
  costs = [LayerCost(kind, detail, len(calls), time_call(calls[0], repeats=repeats))
           for (kind, detail, _), calls in groups.items()]
  return sorted(costs, key=lambda c: -c.ms_per_step)


def by_kind(costs: Sequence[LayerCost]) -> list[dict]:
  """Per layer type: {'kind', 'calls', 'ms_per_step', 'share'}, most expensive first;
  `share` is the fraction of the sum over all layers."""
  total = sum(c.ms_per_step for c in costs) or 1.0
  kinds = {}
  for cost in costs:
    row = kinds.setdefault(cost.kind, {'kind': cost.kind, 'calls': 0, 'ms_per_step': 0.0})
    row['calls'] += cost.calls
    row['ms_per_step'] += cost.ms_per_step
  rows = sorted(kinds.values(), key=lambda r: -r['ms_per_step'])
  for row in rows:
    row['share'] = row['ms_per_step'] / total
  return rows
