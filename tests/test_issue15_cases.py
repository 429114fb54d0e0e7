"""Cases of issue 15 ("Nothing lost, round two") found open, or untested, by its audit: a
Ctrl-C swallowed while jax loads, a library warning printed twice, a sweep rejected at its
first run that leaves its directory, a benchmark that fails on --out after measuring, a
dtype create_model did not check."""
import gc
import logging
import os
import re
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ablation as ablation_script, benchmark, cli, train as train_script
from experiments.configs import ablation_quick
from resnet_jax.ablation import sweep
from resnet_jax.errors import ConfigError
from resnet_jax.models import create_model

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'experiments', 'configs')
TINY_CONFIG = os.path.join(CONFIGS, 'tiny_test.py')
ABLATION_QUICK = os.path.join(CONFIGS, 'ablation_quick.py')


@pytest.mark.parametrize('script,work', [
    (train_script, 'resnet_jax.train.train_and_evaluate'),
    (ablation_script, 'resnet_jax.ablation.sweep.run_sweep')], ids=['train', 'ablation'])
def test_a_stop_swallowed_by_a_gc_callback_still_ends_the_script(script, work, monkeypatch,
                                                                 capsys, tmp_path):
  # A Ctrl-C in the first second lands, often, in jax's garbage-collector callback while
  # jax is imported (or in numpy's extension, which makes it an ImportError); Python prints
  # such an exception as 'Exception ignored' and goes on, so the run used to train to its
  # end as if no key had been pressed. The signal now waits until the imports are done.
  def interrupted_inside_a_gc_callback(*args, **kwargs):
    def callback(phase, _info):
      if phase == 'start' and not fired:
        fired.append(phase)
        signal.raise_signal(signal.SIGINT)

    fired = []
    gc.callbacks.append(callback)
    try:
      gc.collect()
    finally:
      gc.callbacks.remove(callback)
    assert fired
    setup_logging(*args, **kwargs)

  def the_work(*args, **kwargs):
    raise AssertionError('the run started although Ctrl-C was pressed before it')

  setup_logging = cli.setup_logging
  monkeypatch.setattr(cli, 'setup_logging', interrupted_inside_a_gc_callback)
  monkeypatch.setattr(work, the_work)
  before = signal.getsignal(signal.SIGINT)
  config = TINY_CONFIG if script is train_script else ABLATION_QUICK
  code = script.main([f'--config={config}', f'--workdir={tmp_path / "run"}'])
  err = capsys.readouterr().err
  assert code == 0, err
  assert err == ('stopped by SIGINT outside the training loop; what the run saved is kept; '
                 'rerun the same command to continue\n'), err
  assert signal.getsignal(signal.SIGINT) is before
  assert not (tmp_path / 'run').exists()


def test_a_library_warning_is_printed_once(monkeypatch, capsys):
  # The config file imports resnet_jax.train, whose orbax logs through absl before any
  # handler exists: absl then calls logging.basicConfig(), and every library warning (a
  # half-deleted checkpoint after a kill -9, say) came out twice.
  monkeypatch.setattr(logging.getLogger(), 'handlers', [])
  logging.basicConfig()
  cli.setup_logging()
  logging.getLogger('absl').warning('Metadata file does not exist: /w/checkpoints/12')
  assert capsys.readouterr().err == (
      'WARNING absl: Metadata file does not exist: /w/checkpoints/12\n')


def _quick_sweep_config(**train_overrides):
  """The quick sweep with one model, and fields of config.base.train set."""
  config = ablation_quick.get_config()
  config.models = ('cifar_plain8',)
  config.base.train.update(train_overrides)
  return config


def test_a_sweep_whose_first_run_is_rejected_leaves_no_new_directory(tmp_path):
  # ablation.py --workdir new/sweep --config.base.train.batch_size=100000 used to leave
  # new/sweep/sweep_config.json behind (the run itself removed its own directory).
  workdir = tmp_path / 'new' / 'sweep'
  with pytest.raises(ConfigError, match=r'config\.train\.batch_size=100000'):
    sweep.run_sweep(_quick_sweep_config(batch_size=100000), str(workdir))
  assert os.listdir(tmp_path) == []


def test_a_rejected_sweep_leaves_an_existing_sweep_directory_as_it_was(tmp_path):
  (tmp_path / 'sweep_config.json').write_text('{"title": "the earlier sweep"}\n')
  (tmp_path / 'notes.txt').write_text('mine')

  def rejected(*args, **kwargs):
    raise ConfigError('rejected at its start')

  with pytest.raises(ConfigError, match='rejected at its start'):
    sweep.run_sweep(_quick_sweep_config(), str(tmp_path), train_fn=rejected)
  assert sorted(os.listdir(tmp_path)) == ['notes.txt', 'sweep_config.json']
  assert (tmp_path / 'sweep_config.json').read_text() == '{"title": "the earlier sweep"}\n'


@pytest.mark.parametrize('out', ['a_file', 'a_file/sweep'])
def test_benchmark_refuses_an_out_under_a_file_before_measuring(out, tmp_path, capsys,
                                                                monkeypatch):
  # --out=a_file/sweep used to fail with a NotADirectoryError traceback after the whole
  # sweep had been measured.
  (tmp_path / 'a_file').write_text('notes')

  def measure(*args, **kwargs):
    raise AssertionError('measured before checking --out')

  monkeypatch.setattr('resnet_jax.perf.benchmarking.measure', measure)
  assert benchmark.main(['--sweep=1,2', f'--out={tmp_path / out}']) == cli.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  what = 'a file' if out == 'a_file' else f'under a file ({tmp_path / "a_file"})'
  assert err == (f'error: UsageError: --out={tmp_path / out} is {what}; expected a directory '
                 "for the sweep's table and plot\n"), err
  assert os.listdir(tmp_path) == ['a_file'] and (tmp_path / 'a_file').read_text() == 'notes'


@pytest.mark.parametrize('dtype', ['float17', 'int8', 3])
def test_create_model_refuses_a_dtype_that_is_not_floating(dtype):
  # Was accepted, then failed deep inside init (TypeError / 'Dtype must be inexact').
  with pytest.raises(ConfigError, match=rf"dtype={re.escape(repr(dtype))}; expected a "
                     'floating-point type'):
    create_model('cifar_resnet8', dtype=dtype)


def test_create_model_takes_floating_dtypes():
  for dtype in ('float32', 'bfloat16', jnp.float16, np.float32):
    assert create_model('cifar_resnet8', dtype=dtype).dtype == dtype

