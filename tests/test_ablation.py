"""The residual-against-plain sweep: runs on disk, skip and resume, the configs."""
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax.ablation import results, sweep
from resnet_jax.errors import ConfigError
from resnet_jax.train import config as config_lib, setup, train_and_evaluate
from resnet_jax.train.state import create_train_state

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'configs')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIG_DIR, name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_sweep_config():
  """The quick sweep (the digits config cut by ablation_quick.py), cut to one depth: two
  runs of 12 steps."""
  config = load_config('ablation_quick')
  config.models = ('cifar_plain8', 'cifar_resnet8')
  return config


def refuse_training(*args, **kwargs):
  raise AssertionError('a finished run was trained again')


def file_states(directory):
  """{path: (mtime_ns, size)} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      stat = os.stat(path)
      out[path] = (stat.st_mtime_ns, stat.st_size)
  return out


@pytest.fixture(scope='module')
def finished_sweep(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('sweep'))
  calls = []

  def train_fn(config, run_workdir, **kwargs):
    calls.append((config.model.name, config.train.seed))
    return train_and_evaluate(config, run_workdir, **kwargs)

  out = sweep.run_sweep(tiny_sweep_config(), workdir, train_fn=train_fn)
  return workdir, out, calls


@pytest.mark.slow  # A sweep of training runs.
def test_sweep_trains_every_run_in_its_own_workdir(finished_sweep):
  workdir, out, calls = finished_sweep
  assert calls == [('cifar_plain8', 0), ('cifar_resnet8', 0)]
  assert out['status'] == {('cifar_plain8', 0): 'done', ('cifar_resnet8', 0): 'done'}
  for model in ('cifar_plain8', 'cifar_resnet8'):
    run = os.path.join(workdir, model, 'seed0')
    with open(os.path.join(run, 'result.json')) as f:
      result = json.load(f)
    assert result['model'] == model and result['seed'] == 0
    assert result['final']['step'] == 12 and result['resumed_from'] is None
    # Depth 8 on 3 channels: stem 432 + 32, stage blocks 4,672 + 13,952 + 55,552 (convs and
    # BN), head 650. The plain twin has as many: option-A shortcuts have no parameters.
    assert result['params'] == 75_290
    train, evals = results.read_metrics(os.path.join(run, 'metrics.jsonl'))
    assert [r['step'] for r in train] == [4, 8, 12]
    assert [r['step'] for r in evals] == [12]
    with open(os.path.join(run, 'gradient_flow.json')) as f:
      flow = json.load(f)
    # Initialisation plus the checkpoints the run kept (every 6 steps).
    assert [s['step'] for s in flow['snapshots']] == [0, 6, 12]
    assert flow['probe_batch_size'] == 16
    for snapshot in flow['snapshots']:
      # stem conv + BN, 3 blocks x (2 convs + 2 BNs), head.
      assert len(snapshot['layers']) == 15
      assert all(np.isfinite(v) and v > 0 for v in snapshot['layers'].values())
  rows = out['rows']
  assert [r['model'] for r in rows] == ['cifar_plain8', 'cifar_resnet8']
  for name in ('results.csv', 'results.md', 'training_error.png', 'gradient_flow.png'):
    assert os.path.join(workdir, name) in out['paths']
  for name in ('training_error.png', 'gradient_flow.png'):
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == PNG_MAGIC


@pytest.mark.slow  # A sweep of training runs.
def test_rerun_skips_finished_runs_without_touching_them(finished_sweep):
  workdir, first, _ = finished_sweep
  runs = [os.path.join(workdir, m) for m in ('cifar_plain8', 'cifar_resnet8')]
  before = {run: file_states(run) for run in runs}
  out = sweep.run_sweep(tiny_sweep_config(), workdir, train_fn=refuse_training)
  assert set(out['status'].values()) == {'skipped'}
  assert {run: file_states(run) for run in runs} == before
  assert out['markdown'] == first['markdown']


@pytest.mark.slow  # A sweep of training runs.
def test_interrupted_run_resumes_from_its_checkpoint(finished_sweep, tmp_path):
  workdir, _, _ = finished_sweep
  # A copy of the plain run as a crash at step 7 would have left it: the checkpoint of
  # step 6, its metrics up to step 4 plus a line of step 8 not covered by any checkpoint,
  # no gradient_flow.json and no result.json.
  copy = str(tmp_path / 'sweep')
  shutil.copytree(os.path.join(workdir, 'cifar_plain8'), os.path.join(copy, 'cifar_plain8'))
  run = os.path.join(copy, 'cifar_plain8', 'seed0')
  for name in ('result.json', 'gradient_flow.json'):
    os.remove(os.path.join(run, name))
  shutil.rmtree(os.path.join(run, 'checkpoints', '12'))
  metrics = os.path.join(run, 'metrics.jsonl')
  with open(metrics) as f:
    lines = f.readlines()
  with open(metrics, 'w') as f:
    f.writelines(lines[:2])
  config = tiny_sweep_config()
  config.models = ('cifar_plain8',)
  calls = []

  def train_fn(train_config, run_workdir, **kwargs):
    calls.append(run_workdir)
    return train_and_evaluate(train_config, run_workdir, **kwargs)

  out = sweep.run_sweep(config, copy, train_fn=train_fn)
  assert out['status'] == {('cifar_plain8', 0): 'done'}
  assert calls == [run]
  with open(os.path.join(run, 'result.json')) as f:
    result = json.load(f)
  assert result['resumed_from'] == 6 and result['final']['step'] == 12
  train, _ = results.read_metrics(metrics)
  assert [r['step'] for r in train] == [4, 8, 12]
  # Resuming is exact: the same metrics as the uninterrupted run.
  original, _ = results.read_metrics(os.path.join(workdir, 'cifar_plain8', 'seed0',
                                                  'metrics.jsonl'))
  np.testing.assert_allclose([r['train_loss'] for r in train],
                             [r['train_loss'] for r in original], rtol=1e-5)


@pytest.mark.slow  # A sweep of training runs.
def test_rerun_with_another_training_config_is_refused(finished_sweep):
  workdir, _, _ = finished_sweep
  config = tiny_sweep_config()
  config.base.optim.learning_rate = 0.5
  with pytest.raises(ConfigError, match=r'seed0/result\.json.*another training config '
                     r'\(optim\.learning_rate: 0\.\d+ there, 0\.5 now\)'):
    sweep.run_sweep(config, workdir, train_fn=refuse_training)


def test_a_finished_run_of_the_flat_config_layout_is_refused_as_such(tmp_path):
  run = sweep.run_dir(str(tmp_path), 'cifar_plain8', 0)
  os.makedirs(run)
  with open(os.path.join(run, 'result.json'), 'w') as f:
    json.dump({'model': 'cifar_plain8', 'seed': 0,
               'config': {'model': 'cifar_plain8', 'learning_rate': 0.05}}, f)
  with pytest.raises(ConfigError, match=r"result\.json.*earlier flat config layout"):
    sweep.run_one(tiny_sweep_config(), str(tmp_path), 'cifar_plain8', 0, None, refuse_training)


def test_sweep_config_errors_name_the_field(tmp_path):
  config = tiny_sweep_config()
  config.seeds = (0, 0)
  with pytest.raises(ConfigError, match=r'config\.seeds=\(0, 0\)'):
    sweep.run_sweep(config, str(tmp_path), train_fn=refuse_training)
  config = tiny_sweep_config()
  config.models = ('cifar_resnet9',)
  with pytest.raises(ConfigError, match='cifar_resnet9'):
    sweep.run_sweep(config, str(tmp_path), train_fn=refuse_training)


@pytest.mark.parametrize('name', ['ablation_digits', 'ablation_signs', 'ablation_cifar10'])
def test_ablation_configs_are_valid_sweeps_of_twins(name):
  config = load_config(name)
  sweep.check_sweep_config(config)
  kinds = {}
  for model in config.models:
    kind, depth = results.describe_model(model)
    kinds.setdefault(depth, set()).add(kind)
    config_lib.validate_config(sweep.run_config(config, model, config.seeds[0]))
  # Every depth has both twins, trained with one shared recipe.
  assert all(k == {'plain', 'residual'} for k in kinds.values())
  assert len(config.seeds) >= 1


def test_digits_config_is_the_four_depths_of_figure_6():
  config = load_config('ablation_digits')
  depths = sorted({results.describe_model(m)[1] for m in config.models})
  assert depths == [20, 32, 44, 56]
  assert len(config.seeds) >= 2


@pytest.mark.slow  # A sweep of training runs.
def test_tiny_cifar_depths_and_starting_variables_match_the_training_loop():
  train_config = sweep.run_config(tiny_sweep_config(), 'cifar_resnet14', 3)
  model = setup.build_model(train_config)
  assert tuple(model.stage_sizes) == (2, 2, 2) and model.residual
  plain_config = sweep.run_config(tiny_sweep_config(), 'cifar_plain8', 3)
  plain = setup.build_model(plain_config)
  assert tuple(plain.stage_sizes) == (1, 1, 1) and not plain.residual
  with pytest.raises(ConfigError, match='cifar_plain9'):
    setup.build_model(sweep.run_config(tiny_sweep_config(), 'cifar_plain9', 0))
  # The probe's step 0 is the run's own initialisation.
  ours = sweep.starting_variables(plain_config, plain, (8, 8, 3))
  theirs = create_train_state(plain, optax.identity(), (8, 8, 3), 3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ours['params'],
               theirs.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ours['batch_stats'],
               theirs.batch_stats)
  plain_config.train.seed = 4
  other_seed = sweep.starting_variables(plain_config, plain, (8, 8, 3))
  assert not np.allclose(other_seed['params']['head']['kernel'], ours['params']['head']['kernel'])


def stop_before_training(captured):
  """A train_fn that records what the sweep hands to training and stops the sweep there,
  as a preemption before the first step would."""
  def train_fn(train_config, run_workdir, **kwargs):
    captured.append((train_config, kwargs))
    return {'preempted': True}
  return train_fn


def sweep_model(tmp_path, **overrides):
  """(the module the sweep trains its first run with, that run's config); overrides of
  config.base by dotted name ('model.sync_bn')."""
  config = tiny_sweep_config()
  config.models = ('cifar_resnet8',)
  for key, value in overrides.items():
    group, field = key.split('.')
    config.base[group][field] = value
  captured = []
  out = sweep.run_sweep(config, str(tmp_path), train_fn=stop_before_training(captured))
  assert out['preempted'] and len(captured) == 1
  train_config, kwargs = captured[0]
  return kwargs['model'], train_config


@pytest.mark.slow  # Builds and starts a sweep's runs.
def test_every_model_flag_of_the_config_reaches_the_swept_model(tmp_path):
  x = jnp.zeros((1, 8, 8, 3))
  default, _ = sweep_model(tmp_path / 'default')
  assert default == setup.build_model(sweep.run_config(tiny_sweep_config(), 'cifar_resnet8', 0))
  assert (default.zero_init_last_bn, default.bn_axis_name, default.frozen_bn) == (
      False, None, False)
  assert default.dtype == jnp.float32
  stats = default.init(jax.random.key(0), x, train=False)['params']['stage1_block1']
  assert jnp.all(stats['bn2']['scale'] == 1)

  zero_init, train_config = sweep_model(tmp_path / 'zero', **{'model.zero_init_last_bn': True})
  assert train_config.model.zero_init_last_bn and zero_init.zero_init_last_bn
  params = zero_init.init(jax.random.key(0), x, train=False)['params']
  for block in ('stage1_block1', 'stage2_block1', 'stage3_block1'):
    scales = params[block]['bn2']['scale'], params[block]['bn1']['scale']
    assert not jnp.any(scales[0]) and jnp.all(scales[1] == 1)

  assert sweep_model(tmp_path / 'sync', **{'model.sync_bn': True})[0].bn_axis_name == 'batch'
  frozen, _ = sweep_model(tmp_path / 'frozen', **{'finetune.freeze_backbone': True,
                                                  'finetune.init_from': '/pretrained'})
  assert frozen.frozen_bn

  bf16, _ = sweep_model(tmp_path / 'bf16', **{'model.dtype': 'bfloat16'})
  assert bf16.dtype == jnp.bfloat16
  logits, variables = jax.eval_shape(
      lambda: bf16.init_with_output(jax.random.key(0), x, train=False))
  assert logits.dtype == jnp.bfloat16
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype('float32')}


def test_zero_init_of_the_plain_twins_stops_the_sweep_before_any_training(tmp_path):
  config = tiny_sweep_config()
  config.base.model.zero_init_last_bn = True
  with pytest.raises(ConfigError, match=r"runs of 'cifar_plain8'.*zero_init_last_bn=True"):
    sweep.run_sweep(config, str(tmp_path), train_fn=refuse_training)
  assert not os.path.exists(os.path.join(tmp_path, 'cifar_resnet8'))


def test_a_model_that_does_not_fit_the_data_stops_the_sweep_before_any_training(tmp_path):
  config = tiny_sweep_config()
  config.models = ('cifar_plain8', 'cifar_resnet8', 'resnet18')  # 8x8 digits: too small.
  workdir = tmp_path / 'sweep'
  with pytest.raises(ConfigError, match=r"runs of 'resnet18': image_size=8 is too small"):
    sweep.run_sweep(config, str(workdir), train_fn=refuse_training)
  assert not workdir.exists()


def test_the_script_names_the_member_in_one_line_and_writes_nothing(tmp_path, capsys,
                                                                     monkeypatch):
  from experiments import ablation as script
  from resnet_jax.train import loop
  monkeypatch.setattr(loop, 'train_and_evaluate', refuse_training)
  workdir = tmp_path / 'sweep'
  code = script.main([f'--workdir={workdir}', '--config.models=("cifar_plain20", "resnet18")'])
  out, err = capsys.readouterr()
  assert code == 2 and out == ''
  assert err == ("error: ConfigError: sweep config.models, the runs of 'resnet18': image_size=8 "
                 'is too small for this imagenet-stem ResNet with 4 stages, which downsamples by '
                 '32; expected image_size >= 32\n')
  assert os.listdir(tmp_path) == []


def test_quick_config_cuts_any_sweep_to_tiny_nets():
  quick = load_config('ablation_quick')
  sweep.check_sweep_config(quick)
  assert quick.models == ('cifar_plain8', 'cifar_plain14', 'cifar_resnet8', 'cifar_resnet14')
  assert quick.seeds == (0,) and quick.base.train.num_steps == 12
  assert quick.base.data.name == load_config('ablation_digits').base.data.name
  spec = importlib.util.spec_from_file_location(
      'ablation_quick', os.path.join(CONFIG_DIR, 'ablation_quick.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cifar = module.quick(load_config('ablation_cifar10'))
  sweep.check_sweep_config(cifar)
  assert cifar.models == quick.models and cifar.base.data.name == 'cifar10'
  assert cifar.base.model.num_classes == 10
