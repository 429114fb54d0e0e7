"""The shared test data (tests/helpers.py) is learnable: brightness alone tells the class."""
import numpy as np

from helpers import make_split


def test_tiny_data_is_learnable_by_brightness():
  split = make_split(300, 0)
  brightness = split.images.reshape(len(split), -1).mean(1)
  predicted = np.digitize(brightness, [34.5 + 40, 34.5 + 120])  # Mean noise + 80 per class.
  assert np.mean(predicted == split.labels) > 0.95


def test_poisoned_examples_and_only_those_reach_255():
  split = make_split(50, 0, poison_index=[3, 7])
  assert np.flatnonzero(split.images.reshape(50, -1).max(1) == 255).tolist() == [3, 7]
  assert split.images[[3, 7], 0, 0, 0].tolist() == [255, 255]
