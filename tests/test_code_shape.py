"""The library's code keeps a shape a reader can hold: no function takes more than 8 parameters.

Read from the source with `ast` (nothing is imported). A parameter is every name a caller
can bind: positional-only, positional and keyword-only ones; `self` and `cls` (the first
parameter of a method) are not counted. `*args` and `**kwargs` count one each, so a
function cannot pass the limit by taking its settings as `**kwargs`: settings that travel
together belong in a frozen dataclass (e.g. resnet_jax.data.prepare_images.PrepareOptions,
resnet_jax.train.steps.StepSettings).
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(REPO, 'resnet_jax')
MAX_PARAMETERS = 8


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> int:
  """How many parameters `function` takes, as the module docstring counts them."""
  args = function.args
  names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
  if in_class and names and names[0] in ('self', 'cls'):
    names = names[1:]
  return len(names) + (args.vararg is not None) + (args.kwarg is not None)


def functions(tree: ast.AST):
  """(qualified name, node, defined directly in a class) of every function in `tree`."""
  def visit(node, prefix, in_class):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield f'{prefix}{child.name}', child, in_class
        yield from visit(child, f'{prefix}{child.name}.', False)
      elif isinstance(child, ast.ClassDef):
        yield from visit(child, f'{prefix}{child.name}.', True)
      else:
        yield from visit(child, prefix, in_class)
  yield from visit(tree, '', False)


def too_many_parameters(root: str, limit: int = MAX_PARAMETERS) -> list[str]:
  """'path:line name (count)' of every function under `root` with more than `limit`."""
  found = []
  for directory, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
      for qualified, node, in_class in functions(tree):
        count = parameter_count(node, in_class)
        if count > limit:
          found.append(f'{os.path.relpath(path, REPO)}:{node.lineno} {qualified} ({count})')
  return found


def test_no_library_function_takes_more_than_eight_parameters():
  assert too_many_parameters(LIBRARY) == []


@pytest.mark.parametrize('source, expected', [
    ('def f(a, b, c, d, e, f, g, h): pass', 8),
    ('def f(a, /, b, *, c, d=1): pass', 4),
    ('def f(a, *args, b, **kwargs): pass', 4),
    ('class C:\n  def m(self, a, b): pass\n  @classmethod\n  def k(cls, a): pass', None),
])
def test_parameters_are_counted_as_the_docstring_says(source, expected):
  tree = ast.parse(source)
  counts = {name: parameter_count(node, in_class) for name, node, in_class in functions(tree)}
  if expected is None:
    assert counts == {'C.m': 2, 'C.k': 1}
  else:
    assert counts == {'f': expected}


def test_a_function_over_the_limit_is_named_with_its_file_and_count(tmp_path):
  (tmp_path / 'wide.py').write_text(
      'def ok(a, b, c, d, e, f, g, h):\n  pass\n\n\n'
      'class Model:\n  def wide(self, a, b, c, d, e, f, g, h, *rest):\n'
      '    def inner(x, **kw):\n      pass\n')
  found = too_many_parameters(str(tmp_path))
  assert len(found) == 1 and found[0].endswith('wide.py:6 Model.wide (9)')


def import_graph(root: str) -> dict[str, set[str]]:
  """{module: the library modules it imports}, lazy imports inside functions included (a
  circle hidden by a lazy import is still a circle); `from package import name` counts as
  importing the submodule where `name` is one, else the package."""
  modules = {}
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, '.')
        modules[dotted.removesuffix('.__init__')] = path
  top = os.path.basename(root)
  graph = {}
  for module, path in modules.items():
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        found.update(a.name for a in node.names if a.name.split('.')[0] == top)
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == top:
        for alias in node.names:
          submodule = f'{node.module}.{alias.name}'
          found.add(submodule if submodule in modules else node.module)
    graph[module] = {m for m in found if m in modules and m != module}
  return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected groups of more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, circles = {}, {}, [], set(), []

  def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for other in sorted(graph[module]):
      if other not in index:
        visit(other)
        low[module] = min(low[module], low[other])
      elif other in on_stack:
        low[module] = min(low[module], index[other])
    if low[module] == index[module]:
      group = []
      while True:
        other = stack.pop()
        on_stack.discard(other)
        group.append(other)
        if other == module:
          break
      if len(group) > 1:
        circles.append(sorted(group))

  for module in sorted(graph):
    if module not in index:
      visit(module)
  return circles


def test_the_library_has_no_import_circle():
  assert import_circles(import_graph(LIBRARY)) == []


def test_an_import_circle_through_a_lazy_import_is_found(tmp_path):
  package = tmp_path / 'pkg'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'a.py').write_text('from pkg import b\n')
  (package / 'b.py').write_text('def f():\n  from pkg.a import g\n')
  (package / 'c.py').write_text('import pkg.a\n')
  assert import_circles(import_graph(str(package))) == [['pkg.a', 'pkg.b']]
