"""config.run.profile_steps: a jax.profiler trace of those steps in the workdir, and a run
that traces computes, stops and resumes as one that does not."""
import glob
import os

import pytest

import helpers as fx
from _fault_helpers import records
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib, loop, profiling


def _run(workdir, **overrides):
  return loop.train_and_evaluate(fx.fault_config(**overrides), str(workdir), model=fx.TinyNet(),
                                 dataset=fx.fault_dataset())


def _trace_files(workdir):
  base = os.path.join(str(workdir), profiling.PROFILE_DIR, 'plugins', 'profile', '*')
  return sorted(glob.glob(os.path.join(base, '*.xplane.pb'))), sorted(
      glob.glob(os.path.join(base, 'perfetto_trace.json.gz')))


@pytest.mark.slow  # Whole training runs.
def test_a_traced_run_writes_the_trace_and_stops_and_resumes_as_one_without(tmp_path,
                                                                           monkeypatch):
  reference = tmp_path / 'reference'
  _run(reference)  # 18 steps, chunks of 2, no trace.
  assert not os.path.exists(reference / profiling.PROFILE_DIR)

  calls = {'n': 0}

  def stop_after_four_chunks(self):
    calls['n'] += 1
    return calls['n'] > 4  # Chunks end at steps 2, 4, 6, 8: stops at step 8.

  traced = tmp_path / 'traced'
  monkeypatch.setattr(loop.StopRequest, 'requested', stop_after_four_chunks)
  result = _run(traced, **{'run.profile_steps': (2, 6)})
  assert result['preempted'] and result['step'] == 8
  xplanes, perfetto = _trace_files(traced)
  assert len(xplanes) == 1 and len(perfetto) == 1  # One trace, for TensorBoard and Perfetto.
  assert os.path.getsize(xplanes[0]) > 0 and os.path.getsize(perfetto[0]) > 0
  monkeypatch.undo()
  # Resumed with the trace off (a `run` field, free on resume): the same run as the reference.
  result = _run(traced)
  assert result['resumed_from'] == 8 and not result['preempted']
  assert records(traced) == records(reference)
  assert len(_trace_files(traced)[0]) == 1  # Nothing traced after the resume.


@pytest.mark.parametrize('value', [(3,), (4, 4), (-1, 2), (1.5, 3), (1, 2, 3), None])
def test_a_bad_profile_steps_names_the_field(value):
  config = fx.fault_config()
  config.run.profile_steps = value
  with pytest.raises(ConfigError, match=r'run\.profile_steps'):
    config_lib.validate_config(config, check_model=False)


def test_profile_steps_is_free_on_resume():
  assert config_lib.is_free_on_resume('run.profile_steps')
