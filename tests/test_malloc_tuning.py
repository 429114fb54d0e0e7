"""Scripts re-run themselves once under glibc malloc tunables (experiments/malloc_tuning.py):
a fresh process is the point, so these run one small subprocess each."""
import os
import platform
import subprocess
import sys

import pytest

from experiments import malloc_tuning

_PROBE = ('import os; from experiments import malloc_tuning; print(os.getpid()); '
          'malloc_tuning.reexec_with_tuned_malloc(); '
          'print(os.getpid()); print(os.environ.get("GLIBC_TUNABLES", ""))')
on_glibc = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')


def _probe(**env_changes):
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'RESNET_JAX_MALLOC_TUNED')}
  env.update(env_changes)
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True,
                       check=True, timeout=60).stdout.splitlines()
  return out


@on_glibc
def test_the_process_reexecutes_itself_once_with_the_tunables_kept_by_the_pid():
  lines = _probe()
  # Printed once before the exec and again by the re-executed process, then both lines of
  # the second run: same pid throughout, the tunables set once.
  pids = {line for line in lines if line.isdigit()}
  assert len(pids) == 1, lines
  assert lines[-1] == ':'.join(malloc_tuning.TUNABLES)
  assert lines.count(lines[0]) == 3  # The pid before the exec, then twice after it.


@on_glibc
def test_a_user_choice_of_huge_pages_is_left_alone_and_other_tunables_are_kept():
  assert _probe(GLIBC_TUNABLES='glibc.malloc.hugetlb=0')[-1] == 'glibc.malloc.hugetlb=0'
  kept = _probe(GLIBC_TUNABLES='glibc.malloc.arena_max=2')[-1]
  assert kept == ':'.join(('glibc.malloc.arena_max=2',) + malloc_tuning.TUNABLES)
