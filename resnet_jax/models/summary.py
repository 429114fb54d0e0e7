"""A per-layer account of a model (output shapes, parameter counts), like Keras's summary.

Everything is traced with `jax.eval_shape`, so even ResNet-152 is summarised without
compiling or allocating it. Parameters are counted as Keras does: trainable
parameters plus the BatchNorm moving statistics (`batch_stats`, non-trainable).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerRow:
  """One module call: its path, class, output shape and variables (recursively)."""
  path: tuple[str, ...]
  kind: str
  output_shape: tuple[int, ...]
  params: int
  batch_stats: int

  @property
  def total(self) -> int:
    return self.params + self.batch_stats


@dataclasses.dataclass(frozen=True)
class Summary:
  rows: tuple[LayerRow, ...]
  output_shape: tuple[int, ...]
  output_dtype: Any
  params: int
  batch_stats: int

  @property
  def total(self) -> int:
    return self.params + self.batch_stats


def _count(tree, path) -> int:
  for key in path:
    if key not in tree:
      return 0
    tree = tree[key]
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))


def summarize(model: nn.Module, input_shape, dtype=jnp.float32) -> Summary:
  """Summary of `model` applied (eval mode) to an input of `input_shape` (NHWC).

  Rows come in call order, each parent before its children; the root is left out
  (its counts are the Summary's totals).
  """
  calls = []

  def record(next_fun, args, kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    index = len(calls)
    calls.append(None)
    out = next_fun(*args, **kwargs)
    calls[index] = (context.module.path, type(context.module).__name__, out.shape)
    return out

  def init(x):
    with nn.intercept_methods(record):
      return model.init_with_output(jax.random.key(0), x, train=False)

  out, variables = jax.eval_shape(init, jax.ShapeDtypeStruct(tuple(input_shape), dtype))
  params = variables.get('params', {})
  stats = variables.get('batch_stats', {})
  rows = tuple(
      LayerRow(path=tuple(path), kind=kind, output_shape=tuple(shape),
               params=_count(params, path), batch_stats=_count(stats, path))
      for path, kind, shape in calls if path)
  return Summary(rows=rows, output_shape=tuple(out.shape), output_dtype=out.dtype,
                 params=_count(params, ()), batch_stats=_count(stats, ()))
