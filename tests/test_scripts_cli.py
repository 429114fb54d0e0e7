"""experiments/cli.py: every script parses absl flags, reports bad input as one line
`error: <ErrorType>: <message>` with exit code 2 (a traceback only with --debug), and all
seven import into one process."""
import importlib
import os
import re

import pytest

from experiments import cli

SCRIPTS = ('ablation', 'benchmark', 'convert_keras', 'evaluate', 'landscape', 'predict',
           'prepare_images', 'signs_grid', 'summary', 'train')
ONE_ERROR_LINE = re.compile(r'error: [A-Za-z]+: [^\n]+\n')


def _script(name):
  return importlib.import_module(f'experiments.{name}')


def test_every_script_imports_into_one_process_and_prints_its_help(capsys):
  for name in SCRIPTS:
    module = _script(name)
    assert module.main(['--help']) == 0, name
    out = capsys.readouterr().out
    assert out.startswith(module.__doc__.strip()[:40]) and '--[no]debug:' in out, name


# (script, arguments, error type, a fragment of the message): no model is built or trained.
BAD_INPUT = [
    ('train', ['--config.optim.learnin_rate=0.1'], 'ConfigError',
     'Did you mean "learning_rate"'),
    ('train', ['--config.learning_rate=0.1'], 'ConfigError',
     'fields are grouped now: optim.learning_rate'),
    ('train', ['--config.optim.learning_rate=inf', '--workdir=/nonexistent/x'], 'ConfigError',
     'config.optim.learning_rate=inf: expected a finite positive number'),
    ('train', ['--config=/no/such/config.py'], 'ConfigError', '/no/such/config.py'),
    ('train', ['--no_such_flag'], 'UnrecognizedFlagError', 'no_such_flag'),
    ('train', ['stray'], 'UsageError', "['stray']"),
    ('ablation', ['--config.seeds=abc', '--workdir=/nonexistent/x'], 'ConfigError',
     'config.seeds'),
    ('ablation', ['--config.base.optim.learnin_rate=0.1', '--workdir=/nonexistent/x'],
     'ConfigError', 'Did you mean "learning_rate"'),
    ('benchmark', ['--steps=0'], 'IllegalFlagValueError', '--steps=0'),
    ('benchmark', ['--sweep=4,x'], 'UsageError', '--sweep=4,x'),
    ('convert_keras', ['/no/such/weights.h5', '--out=/nonexistent/out'], 'WeightsError',
     '/no/such/weights.h5'),
    ('convert_keras', [], 'UsageError', 'one input file'),
    ('evaluate', ['--workdir=/no/such/run', '--synthetic_seed=1'], 'ConfigError',
     '/no/such/run'),
    ('evaluate', ['--synthetic_seed=0'], 'UsageError', 'training set'),
    ('predict', ['--workdir=/no/such/run', 'x.png'], 'ConfigError', '/no/such/run'),
    ('predict', [], 'UsageError', 'image files'),
    ('summary', ['--model=resnet51'], 'ConfigError', "'resnet51'"),
    ('prepare_images', ['/no/such/folder', '/nonexistent/out'], 'DatasetError',
     '/no/such/folder'),
    ('landscape', ['--workdir=/nonexistent/x', '--config.landscape.grid_size=0'],
     'ConfigError', 'grid_size'),
    ('summary', ['--input=abc'], 'IllegalFlagValueError', 'abc'),
]


@pytest.mark.parametrize('name,argv,error_type,fragment', BAD_INPUT,
                         ids=[f'{b[0]} {" ".join(b[1])}' for b in BAD_INPUT])
def test_bad_input_is_one_error_line_and_exit_code_2(name, argv, error_type, fragment, capsys):
  assert _script(name).main(argv) == cli.EXIT_BAD_INPUT
  out, err = capsys.readouterr()
  assert ONE_ERROR_LINE.fullmatch(err), err
  assert err.startswith(f'error: {error_type}: ') and fragment in err, err
  assert out == ''


def test_debug_shows_the_traceback_before_the_error_line(capsys):
  summary = _script('summary')
  assert summary.main(['--model=resnet51', '--debug']) == 2
  err = capsys.readouterr().err
  assert err.startswith('Traceback (most recent call last)')
  assert err.splitlines()[-1].startswith("error: ConfigError: model name 'resnet51'")
  assert summary.main(['--model=resnet51']) == 2  # --debug does not stick to the next call.
  assert 'Traceback' not in capsys.readouterr().err


def test_flag_names_may_use_dashes():
  benchmark = _script('benchmark')
  assert benchmark.SCRIPT.parse(['--image-size', '16', '--steps-per-dispatch=4', 'x']) == ['x']
  assert benchmark._IMAGE_SIZE.value == 16 and benchmark._STEPS_PER_DISPATCH.value == 4


def test_config_overrides_apply_and_reset_between_calls():
  train = _script('train')
  train.SCRIPT.parse(['--config.train.num_steps=7', '--workdir=/tmp/w'])
  assert train._CONFIG.value.train.num_steps == 7 and train._WORKDIR.value == '/tmp/w'
  # The same override again: no duplicate flag.
  train.SCRIPT.parse(['--config.train.num_steps=8'])
  assert train._CONFIG.value.train.num_steps == 8
  assert train.SCRIPT.config_path().endswith('signs_resnet50.py')
  train.SCRIPT.parse([])
  assert train._CONFIG.value.train.num_steps != 7 and train._WORKDIR.value is None


def test_error_line_is_one_line():
  assert cli.error_line(ValueError('a\nb')) == 'error: ValueError: a b'
  assert cli.error_line(KeyError('k'), hint='see --help') == "error: KeyError: 'k'; see --help"


def test_default_workdir_is_named_after_the_config_file():
  assert cli.default_workdir('experiments/configs/tiny_test.py') == 'runs/tiny_test'
  assert cli.default_workdir('/x/ablation_digits.py', '_quick') == 'runs/ablation_digits_quick'


def _listing(directory):
  return sorted((p, os.path.getsize(os.path.join(directory, p))) for p in os.listdir(directory))


@pytest.mark.parametrize('name,argv,error_type,fragments', [
    ('train', ['--config={tmp}/broken.py', '--workdir={tmp}/run'], 'ConfigError',
     ['--config={tmp}/broken.py cannot be loaded', 'SyntaxError']),
    ('ablation', ['--config', '{tmp}/broken.py', '--workdir={tmp}/sweep'], 'ConfigError',
     ['--config={tmp}/broken.py cannot be loaded', 'SyntaxError']),
    ('ablation', ['--workdir={tmp}/a_file', '--quick'], 'UsageError',
     ['--workdir={tmp}/a_file is a file']),
    ('benchmark', ['--sweep=1,2', '--out={tmp}/a_file', '--steps=1'], 'UsageError',
     ['--out={tmp}/a_file is a file']),
    ('summary', ['--num_classes=0'], 'IllegalFlagValueError', ['--num_classes=0']),
    ('summary', ['--num-classes', '-3'], 'IllegalFlagValueError', ['--num_classes=-3']),
], ids=['train broken config', 'ablation broken config', 'ablation workdir is a file',
        'benchmark out is a file', 'summary 0 classes', 'summary -3 classes'])
def test_bad_files_and_values_are_one_line_and_change_nothing(name, argv, error_type,
                                                              fragments, tmp_path, capsys):
  (tmp_path / 'broken.py').write_text('def get_config(:\n  return None\n')
  (tmp_path / 'a_file').write_text('notes')
  before = _listing(tmp_path)
  argv = [arg.replace('{tmp}', str(tmp_path)) for arg in argv]
  assert _script(name).main(argv) == cli.EXIT_BAD_INPUT
  out, err = capsys.readouterr()
  assert ONE_ERROR_LINE.fullmatch(err) and out == '', err
  assert err.startswith(f'error: {error_type}: '), err
  for fragment in fragments:
    assert fragment.replace('{tmp}', str(tmp_path)) in err, err
  assert _listing(tmp_path) == before
  assert (tmp_path / 'a_file').read_text() == 'notes'
