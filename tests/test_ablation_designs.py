"""Sweeps over block designs and shortcut options: the names that set them, the three
configs of He et al. 2016 / 2015, their quick cut, the report (from fake runs) and one
quick sweep end to end."""
import importlib.util
import os

import pytest
from test_ablation import load_config
from test_ablation_report import PNG_MAGIC, write_fake_run

from resnet_jax.ablation import results, sweep
from resnet_jax.errors import ConfigError
from resnet_jax.models import DESIGN_NAMES
from resnet_jax.train import config as config_lib, setup

CONFIGS = ('ablation_block_design', 'ablation_shortcuts', 'ablation_depth_preact')


def quick(config):
  path = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'configs',
                      'ablation_quick.py')
  spec = importlib.util.spec_from_file_location('ablation_quick', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.quick(config)


def test_run_names_set_design_and_shortcut():
  assert results.parse_run_name('cifar_resnet20') == ('cifar_resnet20', {})
  assert results.parse_run_name('resnet34:shortcut=zero_pad,block_design=full_preact') == (
      'resnet34', {'shortcut': 'zero_pad', 'block_design': 'full_preact'})
  assert results.describe_model('cifar_resnet110:block_design=bn_after_add') == (
      'residual', 110)
  assert results.describe_variant('cifar_preact_resnet20') == ('full_preact', 'zero_pad')
  assert results.describe_variant('cifar_resnet20:shortcut=projection_all') == (
      'original', 'projection_all')
  for bad, match in [('cifar_resnet20:block_design=fancy', "'block_design=fancy'"),
                     ('cifar_resnet20:depth=3', "'depth=3'"),
                     ('cifar_resnet20:shortcut', "'shortcut'"),
                     ('cifar_resnet20:shortcut=zero_pad,shortcut=projection', 'twice'),
                     ('cifar_resnet21:shortcut=zero_pad', 'cifar_resnet21')]:
    with pytest.raises(ConfigError, match=match):
      results.parse_run_name(bad)


@pytest.mark.parametrize('name', CONFIGS)
def test_design_configs_are_valid_sweeps_whose_runs_build_their_designs(name):
  config = load_config(name)
  sweep.check_sweep_config(config)
  variants = set()
  for model_name in config.models:
    run_config = sweep.run_config(config, model_name, config.seeds[0])
    config_lib.validate_config(run_config)
    model = setup.build_model(run_config)
    variants.add((model.design, model.shortcut, tuple(model.stage_sizes)))
    assert (model.design, model.shortcut) == results.describe_variant(model_name)
  assert len(variants) == len(config.models)  # each run a different network
  assert config.base.data.name == 'digits' and config.base.data.image_size == 8
  cifar = _with_argument(name, "cifar10")
  sweep.check_sweep_config(cifar)
  assert cifar.base.data.name == 'cifar10' and cifar.base.train.num_steps == 64000


def _with_argument(name, argument):
  path = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'configs', name + '.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument)


def test_design_configs_hold_what_the_papers_compare():
  designs = load_config('ablation_block_design')
  assert [results.describe_variant(m)[0] for m in designs.models] == list(DESIGN_NAMES)
  assert len({results.describe_model(m) for m in designs.models}) == 1  # one depth
  assert len(designs.seeds) >= 2
  shortcuts = load_config('ablation_shortcuts')
  assert [results.describe_variant(m)[1] for m in shortcuts.models] == [
      'zero_pad', 'projection', 'projection_all']
  depth = load_config('ablation_depth_preact')
  pairs = {(results.describe_model(m)[1], results.describe_variant(m)[0])
           for m in depth.models}
  assert pairs == {(d, design) for d in (20, 110) for design in ('original', 'full_preact')}


def test_quick_cut_keeps_every_design_at_a_tiny_depth():
  cut = quick(load_config('ablation_block_design'))
  assert cut.models == tuple(f'cifar_resnet8:block_design={d}' for d in DESIGN_NAMES)
  assert cut.base.train.num_steps == 12 and cut.seeds == (0,)
  cut = quick(load_config('ablation_depth_preact'))
  assert cut.models == ('cifar_resnet8', 'cifar_resnet14', 'cifar_preact_resnet8',
                        'cifar_preact_resnet14')
  sweep.check_sweep_config(cut)


def test_report_of_a_design_sweep_names_designs_in_table_and_figures(tmp_path):
  workdir = str(tmp_path)
  errors = {'cifar_resnet20': 0.02, 'cifar_resnet56': 0.04, 'cifar_preact_resnet20': 0.03,
            'cifar_preact_resnet56': 0.01}
  for model, error in errors.items():
    write_fake_run(workdir, model, 0, error)
  report = sweep.write_report(workdir, title='designs')
  rows = report['rows']
  assert [(r['depth'], r['design']) for r in rows] == [
      (20, 'original'), (20, 'full_preact'), (56, 'original'), (56, 'full_preact')]
  assert '| cifar_preact_resnet56 | residual | 56 | 56,000 | 1 |' in report['markdown']
  assert '| full_preact | zero_pad |' in report['markdown']
  assert '- residual (full_preact, shortcut zero_pad): 56 layers end at' in report['markdown']
  for name in ('training_error.png', 'gradient_flow.png'):
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == PNG_MAGIC


@pytest.mark.slow  # A short training run.
def test_quick_design_sweep_runs_end_to_end(tmp_path):
  """The quick cut of the block-design sweep, cut to one of its runs (the report of several
  designs is tested on fake runs above)."""
  config = quick(load_config('ablation_block_design'))
  config.models = config.models[-1:]
  config.base.train.num_steps = 6
  out = sweep.run_sweep(config, str(tmp_path))
  assert out['status'] == {('cifar_resnet8:block_design=full_preact', 0): 'done'}
  assert [(r['design'], r['shortcut']) for r in out['rows']] == [('full_preact', 'zero_pad')]
  run = tmp_path / 'cifar_resnet8:block_design=full_preact' / 'seed0'
  assert os.path.isfile(run / 'result.json') and os.path.isfile(tmp_path / 'results.md')
