"""The values of imported weights: finite everywhere, BatchNorm moving variances > 0.

Every route by which pretrained weights enter a model goes through one of the two checks
here: `load_keras_h5` (and so convert_keras.py and a run's config.finetune.init_from naming
an h5 file) checks each layer of the file, and `restore_variables` (init_from naming a
directory that convert_keras.py or save_variables wrote) checks the restored tree. A damaged
file would otherwise load silently: a NaN in one kernel surfaces as a non-finite loss at the
first step, which blames the learning rate, and a negative moving variance gives NaN
activations in eval mode, so the run ends at chance accuracy and every prediction is uniform.
A variance of exactly 0 is refused too: BatchNorm's epsilon keeps the division finite, but a
channel whose outputs never varied is dead or the file is damaged.

One vectorised pass over each array; positions and counts are worked out only for the array
that fails.
"""
import numpy as np

from resnet_jax.errors import WeightsError

EXPECTED_FINITE = ('expected finite numbers everywhere (the weights are damaged, or were saved '
                   'from a run that diverged): re-download or re-export them')
EXPECTED_VARIANCE = ('expected BatchNorm moving variances > 0 (the weights are damaged): '
                     're-download or re-export them')


def value_problem(array, *, variance: bool = False):
  """What is wrong with the values of `array`, None if nothing; checks finiteness, and with
  `variance` that every value is > 0.

  Returns:
    (what was found, what was expected), e.g. ('1 NaN of 9408 values (the first at index
    (0, 2, 1, 5))', EXPECTED_FINITE) or ('1 of 64 values <= 0 (min -0.5 at index 3)',
    EXPECTED_VARIANCE).
  """
  array = np.asarray(array)
  if array.dtype.kind != 'f':
    return None  # Integers cannot hold a NaN; weights are floats anyway.
  finite = np.isfinite(array)
  if not finite.all():
    counts = [(int(np.isnan(array).sum()), 'NaN'), (int(np.isposinf(array).sum()), '+inf'),
              (int(np.isneginf(array).sum()), '-inf')]
    found = ', '.join(f'{n} {kind}' for n, kind in counts if n)
    return (f'{found} of {array.size} values (the first at {_index(~finite)})',
            EXPECTED_FINITE)
  if variance and array.size and not array.min() > 0:
    low = array.min()
    return (f'{int((array <= 0).sum())} of {array.size} values <= 0 (min {low:g} at '
            f'{_index(array == low)})', EXPECTED_VARIANCE)
  return None


def _index(mask) -> str:
  """'index 3' or 'index (0, 2, 1, 5)': where `mask` is first True."""
  position = tuple(int(i) for i in np.argwhere(np.atleast_1d(mask))[0])
  return f'index {position[0]}' if len(position) == 1 else f'index {position}'


def check_keras_layer(path: str, layer, arrays: dict, ours: dict | None = None) -> None:
  """WeightsError unless every weight of one Keras layer has sound values.

  Args:
    path: the h5 file.
    layer: its KerasLayer.
    arrays: Keras weight name ('kernel', 'moving_variance', ...) -> array, for the layer's
      weights (keras_mapping.weights_by_role's result, or the file's own names).
    ours: Keras weight name -> the Flax path it fills ('batch_stats/stem_bn/var'), where
      the layer is matched to one of the model's.
  """
  for keras_name, array in arrays.items():
    problem = value_problem(array, variance=keras_name == 'moving_variance')
    if problem is None:
      continue
    found, expected = problem
    weight = keras_name
    if keras_name not in layer.weight_names:  # Keras 3 native files store vars/0, vars/1, ...
      position = list(arrays).index(keras_name)  # weights_by_role pairs them in order.
      weight = f'{keras_name}, vars/{position} in the file'
    model = f" (the model's {ours[keras_name]})" if ours and keras_name in ours else ''
    raise WeightsError(f"{path}: layer '{layer.name}' weight '{weight}'{model} holds {found}; "
                       f'{expected}')


def check_variables(where: str, variables: dict, prefix: str = '') -> None:
  """WeightsError unless every array of {'params', 'batch_stats'} has sound values.

  `where` names the source (a checkpoint directory); BatchNorm moving variances are the
  leaves named 'var' under 'batch_stats'.
  """
  for key in sorted(variables, key=str):
    name = f'{prefix}/{key}' if prefix else str(key)
    value = variables[key]
    if isinstance(value, dict):
      check_variables(where, value, name)
      continue
    problem = value_problem(value, variance=name.startswith('batch_stats/') and key == 'var')
    if problem is not None:
      found, expected = problem
      raise WeightsError(f'{where}: variable {name} holds {found}; {expected}')
