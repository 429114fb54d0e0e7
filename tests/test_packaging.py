"""Packaging: pyproject.toml declares what the code imports, the accelerator extras forward
to JAX's own, the requirement files install the package (so they cannot drift from it), and
a built wheel holds the library alone (no top-level `experiments`)."""
import ast
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as _file:
  PYPROJECT = tomllib.load(_file)
PROJECT = PYPROJECT['project']
# Imported by experiments/peer_workers.py only, to time the same step in other frameworks:
# optional (keras is the tests' reference, in the dev extra).
OPTIONAL_PEERS = {'torch', 'keras'}


def _name(requirement: str) -> str:
  return re.split(r'[\s\[<>=!~;]', requirement, maxsplit=1)[0].lower().replace('_', '-')


def _third_party_imports(directory: str) -> set:
  modules = set()
  for path in glob.glob(os.path.join(REPO, directory, '**', '*.py'), recursive=True):
    with open(path) as file:
      tree = ast.parse(file.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        modules.update(alias.name.split('.')[0] for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        modules.add(node.module.split('.')[0])
  return modules - set(sys.stdlib_module_names) - {'resnet_jax', 'experiments'}


def test_every_package_the_code_imports_is_a_declared_dependency():
  declared = {_name(r) for r in PROJECT['dependencies']}
  distributions = importlib.metadata.packages_distributions()
  for directory in ('resnet_jax', 'experiments'):
    for module in _third_party_imports(directory):
      if directory == 'experiments' and module in OPTIONAL_PEERS:
        continue
      names = {_name(d) for d in distributions.get(module, [module])}
      assert names & declared, f'{directory}/ imports {module}: not in [project].dependencies'


def test_versions_python_and_caps():
  assert PROJECT['requires-python'] == '>=3.11'  # jax 0.10 and grain need 3.11.
  by_name = {_name(r): r for r in PROJECT['dependencies']}
  for name in ('jax', 'flax', 'optax', 'orbax-checkpoint', 'grain'):
    assert '<' in by_name[name], f'{name}: capped at the newest release the code passed on'
  # Both machines' versions are admitted: jax 0.10.2 and 0.11.2, orbax 0.12.4 and 0.12.8.
  assert by_name['jax'].startswith('jax>=0.10.2,') and 'orbax-checkpoint>=0.12.4' in by_name[
      'orbax-checkpoint']


def test_accelerator_extras_forward_to_jax_and_dev_holds_the_test_tools():
  extras = PROJECT['optional-dependencies']
  for extra in ('cuda12', 'cuda13', 'tpu'):
    assert extras[extra] == [f'jax[{extra}]']
  assert {_name(r) for r in extras['dev']} >= {'pytest', 'pytest-xdist', 'keras', 'ruff'}


def test_requirement_files_install_the_package_and_nothing_else():
  def lines(name):
    with open(os.path.join(REPO, name)) as file:
      return [line.strip() for line in file if line.strip() and not line.startswith('#')]
  assert lines('requirements.txt') == ['-e .']
  assert lines('requirements-dev.txt') == ['-e .[dev]']
  with open(os.path.join(REPO, '.ci', 'run')) as file:
    assert 'pip install -q -r requirements-dev.txt' in file.read()


def test_only_the_library_is_a_package():
  assert PYPROJECT['tool']['setuptools']['packages']['find']['include'] == ['resnet_jax*']


@pytest.mark.slow  # Builds a wheel (pip fetches the build backend, setuptools).
def test_the_wheel_holds_the_library_its_dependencies_and_extras(tmp_path):
  source = tmp_path / 'source'
  for name in ('resnet_jax', 'experiments', 'tests'):
    shutil.copytree(os.path.join(REPO, name), source / name,
                    ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(os.path.join(REPO, 'pyproject.toml'), source)
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                  '-w', str(tmp_path / 'dist'), str(source)], check=True, capture_output=True)
  (wheel,) = glob.glob(str(tmp_path / 'dist' / '*.whl'))
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    (metadata_name,) = [n for n in names if n.endswith('.dist-info/METADATA')]
    metadata = archive.read(metadata_name).decode()
  assert {n.split('/')[0] for n in names} == {'resnet_jax', metadata_name.split('/')[0]}
  assert 'resnet_jax/train/loop.py' in names
  for extra in ('cuda12', 'cuda13', 'tpu', 'dev'):
    assert f'Provides-Extra: {extra}' in metadata
  assert 'Requires-Python: >=3.11' in metadata
  for requirement in PROJECT['dependencies']:
    assert f'requires-dist: {_name(requirement)}' in metadata.lower().replace('_', '-')
