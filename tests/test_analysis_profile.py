"""The step profile finds every layer of the model and times each distinct shape."""
import jax
import pytest

from resnet_jax.models import create_model
from resnet_jax.perf import profile


def test_layer_calls_cover_every_conv_norm_and_dense_of_the_model():
  model = create_model('resnet50', num_classes=6)
  calls = profile.layer_calls(model, (2, 64, 64, 3))
  kinds = [profile.describe(call)[0] for call in calls]
  # 16 blocks x 3 convs + 4 projections + the stem; as many batch norms; one head.
  assert sum(k.startswith('conv') for k in kinds) == 53
  assert kinds.count('batch_norm train') == 53
  assert kinds.count('dense') == 1


def test_describe_names_the_formulation_auto_takes_on_cpu(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  calls = profile.layer_calls(create_model('resnet50', num_classes=6), (2, 64, 64, 3))
  described = [profile.describe(call) for call in calls]
  assert described[0] == ('conv 7x7 s2 [im2col]', '2x64x64x3 -> 64')
  assert ('conv 3x3 s1 [im2col]', '2x2x2x512 -> 512') in described
  assert ('conv 3x3 s1 [im2col]', '2x8x8x128 -> 128') in described
  xla_model = create_model('resnet50', num_classes=6, conv_impl='xla')
  assert ('conv 3x3 s1 [xla]', '2x8x8x128 -> 128') in [
      profile.describe(call) for call in profile.layer_calls(xla_model, (2, 64, 64, 3))]
  assert ('conv 1x1 s2 [matmul]', '2x15x15x256 -> 128') in described


def test_profile_times_each_distinct_shape_once_and_sums_by_kind():
  model = create_model('cifar_resnet20', stage_sizes=(2, 1, 1), conv_impl='xla')
  costs = profile.profile_layers(model, (2, 8, 8, 3), repeats=1)
  calls = profile.layer_calls(model, (2, 8, 8, 3))
  assert sum(c.calls for c in costs) == len(calls)
  assert len({(c.kind, c.detail) for c in costs}) == len(costs)
  assert all(c.ms_each > 0 for c in costs)
  rows = profile.by_kind(costs)
  assert sum(r['calls'] for r in rows) == len(calls)
  assert sum(r['share'] for r in rows) == pytest.approx(1.0)
  assert [r['ms_per_step'] for r in rows] == sorted((r['ms_per_step'] for r in rows),
                                                    reverse=True)
