"""Two runs on one workdir, and signals at the moments of a run that are not training steps:
data loading, compilation, the first checkpoint save. Each ends cleanly (exit 0, no
traceback, no directory left by a run that saved nothing) and a rerun goes on correctly.
"""
import os
import re
import signal
import subprocess
import sys

import pytest

import _fault_helpers as fh

# Subprocess runs of experiments/train.py: outside the fast loop (pytest -m 'not slow').
pytestmark = pytest.mark.slow

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_startup_signal_driver.py')


def _assert_clean(log: str) -> None:
  for sign in ('Traceback', 'Fatal Python error', 'Segmentation fault', 'KeyboardInterrupt'):
    assert sign not in log, log[-3000:]


def _start_driver(phase, workdir, tmp_path, env=None):
  marker = str(tmp_path / f'{phase}.marker')
  env = dict(env or fh.subprocess_env(), STARTUP_PHASE=phase, STARTUP_MARKER=marker)
  log_path = str(tmp_path / f'{phase}.log')
  with open(log_path, 'ab') as log_file:
    process = subprocess.Popen([sys.executable, DRIVER, f'--config={fh.TINY_CONFIG}',
                                f'--workdir={workdir}'], cwd=fh.REPO, stdout=log_file,
                               stderr=subprocess.STDOUT, env=env)
  process.log_path = log_path
  return process, marker


def _rerun_to_the_end(workdir, resumed_from: int):
  done = fh.run_train(workdir)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  _assert_clean(done.stderr)
  assert fh.committed_steps(workdir)[-1] == fh.TINY_STEPS
  assert f'resumed from: step {resumed_from}' in done.stdout
  steps = fh.metric_steps(workdir, strict=True)
  assert steps == sorted(set(steps)) and steps[-1] == fh.TINY_STEPS


def test_two_runs_on_one_workdir_one_is_refused_at_once(tmp_path):
  workdir = str(tmp_path / 'run')
  # Long enough that both are surely running at once; the winner is stopped afterwards.
  runs = [fh.start_train(workdir, '--config.train.num_steps=5000',
                         log_path=str(tmp_path / f'run{i}.log')) for i in range(2)]
  codes = {}
  while not codes:
    for i, process in enumerate(runs):
      try:
        codes[i] = process.wait(0.05)
      except subprocess.TimeoutExpired:
        pass
  [(loser, code)] = codes.items()
  winner = runs[1 - loser]
  log = fh.read_log(runs[loser])
  assert code == 2, log[-3000:]
  _assert_clean(log)
  assert re.search(rf"error: WorkdirBusyError: workdir '{re.escape(workdir)}' is in use by "
                   rf'another run \(pid {winner.pid} on host ', log), log[-3000:]
  assert winner.poll() is None  # Refused at once, while the other run goes on.
  fh.wait_until(lambda: len(fh.committed_steps(workdir)) >= 1, winner)
  winner.send_signal(signal.SIGTERM)
  assert fh.finish(winner, timeout=120) == 0, fh.read_log(winner)[-3000:]
  stopped = int(re.search(r'stopped by SIGTERM at step (\d+)', fh.read_log(winner)).group(1))
  # metrics.jsonl and the checkpoints are the one run's: each step once, keep_checkpoints=3.
  steps = fh.metric_steps(workdir, strict=True)
  assert steps == list(range(2, stopped + 1, 2)) or steps == list(range(2, stopped, 2))
  saved = fh.committed_steps(workdir)
  assert saved[-1] == stopped and len(saved) <= 3 and fh.tmp_checkpoints(workdir) == []


def test_a_signal_during_compilation_stops_cleanly_and_a_rerun_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  env = fh.subprocess_env()
  del env['JAX_COMPILATION_CACHE_DIR']  # A real, seconds-long compilation.
  log = fh.signal_at_marker(*_start_driver('compile', workdir, tmp_path, env=env),
                            signal.SIGINT, timeout=180)
  _assert_clean(log)
  # The signal is seen once the compiled step has run: the run saves where it stopped.
  step = int(re.search(r'stopped by SIGINT at step (\d+)', log).group(1))
  assert 1 <= step < fh.TINY_STEPS
  assert fh.committed_steps(workdir)[-1] == step and fh.tmp_checkpoints(workdir) == []
  _rerun_to_the_end(workdir, resumed_from=step)


def test_a_signal_during_loading_leaves_nothing_then_one_during_the_first_save_keeps_it(
    tmp_path):
  """Two runs and a rerun on one workdir: the second run, which must start anew since the
  first left nothing, is the one stopped during its first save."""
  workdir = str(tmp_path / 'run')
  log = fh.signal_at_marker(*_start_driver('load', workdir, tmp_path))
  _assert_clean(log)
  assert 'stopped by SIGTERM before the first training step; nothing to save' in log
  assert not os.path.exists(workdir)

  log = fh.signal_at_marker(*_start_driver('save', workdir, tmp_path))
  _assert_clean(log)
  assert 'resumed from' not in log  # Started anew: nothing was left to resume from.
  first = fh.TINY_SAVE_EVERY
  assert f'stopped by SIGTERM at step {first}' in log
  assert fh.committed_steps(workdir) == [first] and fh.tmp_checkpoints(workdir) == []
  _rerun_to_the_end(workdir, resumed_from=first)
