"""Batch norm with its training-mode gradient written out, for XLA:CPU.

Differentiating `nn.BatchNorm` in training mode leaves XLA a chain of passes over the
activation: the cotangent flows back through the normalisation, the variance and the
mean separately, and the three contributions are summed (`add_any`) as whole tensors.
XLA:CPU runs each as its own loop over memory. The closed form needs two per-channel sums
and one pass (Ioffe and Szegedy 2015, section 3):

    dbias = sum(dy),  dscale = sum(dy * xhat),
    dx = scale / sqrt(var + eps) * (dy - dbias / n - xhat * dscale / n)

What that saves in the course's ResNet-50 step on CPU: BENCHMARKS.md, "What each change
bought".

The forward pass is nn.BatchNorm's, operation for operation (two-pass variance, as the
layouts configure it), so outputs and running statistics are bitwise those of
nn.BatchNorm; only the gradients round differently (the same sums in another order).
Parameters and batch statistics are nn.BatchNorm's: same names, shapes, dtypes and
initialisers. Whatever the closed form does not cover (frozen statistics, statistics
synchronised over devices, masks, half precision, the one-pass variance, a missing scale
or bias) goes to nn.BatchNorm unchanged.
"""
import functools

import jax
import jax.numpy as jnp
from flax import linen as nn


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm whose training-mode gradient is the closed form above."""

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None):
    call_value = use_running_average
    use_running_average = nn.merge_param('use_running_average', self.use_running_average,
                                         use_running_average)
    if not self._closed_form_applies(x, use_running_average, mask):
      # nn.BatchNorm's own body in this call (unwrapped: through flax's method wrapper the
      # module would be entered twice, e.g. two rows in a model summary).
      return nn.BatchNorm.__call__.__wrapped__(self, x, call_value, mask=mask)
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    y, mean, var = normalize_with_batch_statistics(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y

  def _closed_form_applies(self, x, use_running_average, mask) -> bool:
    float32 = jnp.float32
    return (not use_running_average and mask is None and self.axis_name is None
            and not self.use_fast_variance and self.use_bias and self.use_scale
            and self.axis in (-1, (-1,), x.ndim - 1, (x.ndim - 1,))
            and self.force_float32_reductions
            and x.dtype == float32 and self.param_dtype == float32
            and (self.dtype is None or jnp.dtype(self.dtype) == float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_with_batch_statistics(x, scale, bias, epsilon):
  """(y, mean, var): x normalised per channel (last axis) with its own mean and biased
  variance, then scaled and shifted; mean and var carry no gradient."""
  return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  # nn.BatchNorm's operations in its order (flax.linen.normalization._compute_stats with
  # use_fast_variance=False, then _normalize), so the outputs are bitwise equal.
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  inverse = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (inverse * scale) + bias
  return (y, mean, var), (x, mean, inverse, scale)


def _backward(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inverse, scale = residuals
  dy = cotangents[0]
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  x_hat = (x - mean) * inverse
  dbias = jnp.sum(dy, axes)
  dscale = jnp.sum(dy * x_hat, axes)
  dx = (scale * inverse) * (dy - dbias / count - x_hat * (dscale / count))
  return dx, dscale, dbias


normalize_with_batch_statistics.defvjp(_forward, _backward)
