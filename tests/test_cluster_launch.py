"""Launching train.py on a cluster: a fake 2-process SLURM job on this machine trains as one
process with the same devices; JAX's environment variables are honoured; a process that
uses fewer GPUs than it can see says so in one line."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import _fault_helpers as fh
from experiments import train

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_multiprocess_worker.py')
STEPS = 8
FLAGS = (f'--config.train.num_steps={STEPS}',)
SLURM_PORTS = 65535 - 2**12 + 1  # JAX's SLURM port: SLURM_JOB_ID % 4096 above this one.


def _slurm_job_id() -> str:
  """A job id whose coordinator port (as jax.distributed derives it) is free here."""
  for offset in np.random.default_rng().permutation(2**12):
    with socket.socket() as s:
      try:
        s.bind(('localhost', SLURM_PORTS + int(offset)))
      except OSError:
        continue
    return str(7 * 2**12 + int(offset))
  raise RuntimeError('no free port for the fake SLURM coordinator')


def _start(record, workdir, *flags, devices, **env):
  return subprocess.Popen(
      [sys.executable, WORKER, str(record), f'--config={fh.TINY_CONFIG}', f'--workdir={workdir}',
       *FLAGS, *flags], cwd=fh.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True, env=fh.subprocess_env(devices=devices, **env))


@pytest.mark.slow  # Subprocess runs of train.py.
def test_a_fake_slurm_job_of_two_processes_trains_as_one_process(tmp_path):
  two, one = tmp_path / 'slurm', tmp_path / 'one_process'
  job = _slurm_job_id()
  processes = [
      _start(tmp_path / f'record{i}.json', two, '--distributed', devices=2, SLURM_JOB_ID=job,
             SLURM_STEP_NODELIST='localhost', SLURM_NTASKS='2', SLURM_PROCID=str(i),
             SLURM_LOCALID=str(i))
      for i in range(2)]
  processes.append(_start(tmp_path / 'record_single.json', one, devices=4))
  try:
    outputs = [p.communicate(timeout=300)[0] for p in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
    assert 'GPUs it can see' not in output  # CPU devices: nothing to warn about.
  # Both joined, as processes 0 and 1 of 2 with two devices each.
  for index in range(2):
    record = json.load(open(tmp_path / f'record{index}.json'))
    assert record['process_index'] == index
    assert record['layouts'][0]['device_indices'] == [2 * index, 2 * index + 1]
  # The same losses and accuracies as one process with the same four devices.
  fh.assert_records_close(two, one, [2, 4, 6, 8])


class _Joined(Exception):
  pass


@pytest.mark.parametrize('flags, expected', [
    ([], ('10.0.0.1:1234', 4, 3)),  # The environment alone.
    (['--num_processes=2', '--process_id=1'], ('10.0.0.1:1234', 2, 1)),  # Flags win.
])
def test_jax_environment_variables_are_honoured(monkeypatch, flags, expected):
  joined = {}

  def initialize(**kwargs):
    joined.update(kwargs)
    raise _Joined

  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  monkeypatch.setattr(jax.config, 'update', lambda *args: None)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  train.SCRIPT.parse(flags)
  try:
    with pytest.raises(_Joined):
      train.initialize_distributed()
  finally:
    train.SCRIPT.flags.unparse_flags()
  assert (joined['coordinator_address'], joined['num_processes'],
          joined['process_id']) == expected


def test_without_flags_or_environment_no_cluster_is_joined(monkeypatch):
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: pytest.fail('joined'))
  train.SCRIPT.parse([])
  try:
    train.initialize_distributed()
  finally:
    train.SCRIPT.flags.unparse_flags()


def test_fewer_gpus_than_visible_warns_in_one_line(tmp_path):
  slurm_node = {'CUDA_VISIBLE_DEVICES': '0,1,2,3'}  # One task per node, given GPU 0.
  warning = train.device_use_warning(1, 'gpu', slurm_node)
  assert '\n' not in warning and warning.startswith('this process uses 1 of the 4 GPUs')
  assert 'srun --ntasks-per-node=4' in warning and 'JAX_LOCAL_DEVICE_IDS=0,1,2,3' in warning
  assert train.device_use_warning(4, 'gpu', slurm_node) is None  # One task using all four.
  assert train.device_use_warning(1, 'gpu', {'CUDA_VISIBLE_DEVICES': '2'}) is None
  assert train.device_use_warning(1, 'cpu', slurm_node) is None
  assert train.device_use_warning(1, 'tpu', slurm_node) is None
  # Without CUDA_VISIBLE_DEVICES: the GPUs the driver shows.
  for name in ('nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm'):
    (tmp_path / name).touch()
  assert '1 of the 2 GPUs' in train.device_use_warning(1, 'gpu', {}, str(tmp_path))
  assert train.device_use_warning(1, 'gpu', {}, str(tmp_path / 'missing')) is None


def test_a_bad_jax_environment_variable_is_a_usage_error(monkeypatch):
  monkeypatch.setenv('JAX_NUM_PROCESSES', 'two')
  train.SCRIPT.parse([])
  try:
    with pytest.raises(train.app.UsageError, match="JAX_NUM_PROCESSES='two': expected an int"):
      train.initialize_distributed()
  finally:
    train.SCRIPT.flags.unparse_flags()
