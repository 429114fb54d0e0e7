"""Nested dicts of arrays (model variables, training states): their paths and shapes.

A checkpoint, pretrained weights and a model's fresh variables are compared by the same
rule: every array path of one is in the other, with the same shape.
"""
from typing import Optional

import numpy as np


def flatten(tree, prefix: str = '') -> dict:
  """A nested dict flattened to {'a/b/c': leaf}, in sorted key order."""
  if isinstance(tree, dict):
    out = {}
    for key in sorted(tree, key=str):
      out.update(flatten(tree[key], f'{prefix}{key}/'))
    return out
  return {prefix.rstrip('/'): tree}


def describe_shape(leaf) -> str:
  """'(3, 3, 16, 16)' for an array (or anything with a shape), 'absent' for None."""
  return str(tuple(np.shape(leaf))) if leaf is not None else 'absent'


def first_shape_mismatch(found: dict, expected: dict) -> Optional[tuple[str, str, str]]:
  """(path, found shape, expected shape) of the first array that is missing on one side or
  has another shape, or None if `found` has exactly the arrays of `expected`.

  Parameters come first, then batch statistics, then the rest, each in path order, so that
  a message names the parameter that differs rather than an optimizer slot of it.
  """
  have, want = flatten(found), flatten(expected)
  order = sorted(set(have) | set(want),
                 key=lambda p: (not p.startswith('params/'), not p.startswith('batch_stats/'), p))
  for path in order:
    got, wanted = have.get(path), want.get(path)
    if got is None or wanted is None or np.shape(got) != np.shape(wanted):
      return path, describe_shape(got), describe_shape(wanted)
  return None
