"""What a run stopped by a signal reports: metrics with the step they were measured at, and
the 'stopped by' line on a line of its own after the progress bar."""
import logging
import signal
import sys

import pytest

import helpers as fx
from experiments import train as train_script
from resnet_jax.train import loop


def test_summary_names_the_step_of_metrics_older_than_the_stop():
  text = train_script.summary({'step': 7, 'preempted': True, 'epoch': 7 / 6,
                               'train_loss': 0.5, 'train_accuracy': 0.75, 'train_step': 6,
                               'eval_loss': 0.25, 'eval_accuracy': 1.0, 'eval_step': 7})
  assert 'stopped by a signal at step 7' in text
  assert 'train loss: 0.5000 (at step 6)' in text
  assert 'train accuracy: 0.7500 (at step 6)' in text
  assert 'test accuracy: 1.0000\n' in text  # Measured at the stop step: no note.


@pytest.mark.slow  # A training run.
def test_stopped_run_reports_the_step_of_its_metrics_after_the_bar(tmp_path, monkeypatch,
                                                                   capsys):
  asked = []

  def stop_after_three_steps(self):
    asked.append(1)
    if len(asked) > 3:
      self.signal_number = signal.SIGTERM
    return len(asked) > 3

  monkeypatch.setattr(loop.StopRequest, 'requested_here', stop_after_three_steps)
  handler = logging.StreamHandler(sys.stderr)  # capsys's stderr, like the bar's.
  handler.setFormatter(logging.Formatter('%(message)s'))
  logger = logging.getLogger('resnet_jax')
  logger.addHandler(handler)
  try:
    result = loop.train_and_evaluate(
        fx.fault_config(**{'run.progress_bar': True, 'speed.steps_per_dispatch': 1}),
        str(tmp_path / 'run'), model=fx.TinyNet(), dataset=fx.fault_dataset())
  finally:
    logger.removeHandler(handler)
  assert result['preempted'] and result['step'] == 3
  assert result['train_step'] == 2  # Logged every 2 steps: the last log was at step 2.
  assert 'train loss' in train_script.summary(result)
  assert '(at step 2)' in train_script.summary(result)
  err = capsys.readouterr().err
  assert any(line.startswith('stopped by SIGTERM at step 3') for line in err.split('\n')), err


def test_a_signal_before_the_loop_takes_over_is_one_line_and_exit_zero(monkeypatch, capsys):
  # While the script still loads its libraries: no KeyboardInterrupt traceback.
  def interrupted_while_loading(body, argv=None, **settings):
    del body, argv, settings
    signal.raise_signal(signal.SIGINT)
    raise AssertionError('the signal did not stop the script')

  before = signal.getsignal(signal.SIGINT)
  monkeypatch.setattr(train_script.SCRIPT, 'run', interrupted_while_loading)
  assert train_script.main([]) == 0
  assert capsys.readouterr().err.startswith('stopped by SIGINT outside the training loop')
  assert signal.getsignal(signal.SIGINT) is before  # Handlers restored.
