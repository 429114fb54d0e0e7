"""Scripts re-run themselves once with glibc's malloc tuned for XLA:CPU's large buffers.

Why: XLA:CPU allocates the temporary buffers of every execution anew (hundreds of MB for
a ResNet-50 step at 64x64, batch 32). glibc serves blocks that large with mmap and gives
them back with munmap, so each step faults in all those 4 KB pages afresh, and the kernel's
time zeroing them is a sizeable part of the step's CPU time. With `glibc.malloc.hugetlb=1`
glibc asks for transparent huge pages (2 MB) for those blocks, and with fixed mmap and trim
thresholds it keeps freed blocks under 32 MB for reuse: far fewer faults and less kernel
time per step (BENCHMARKS.md, "What each change bought", the malloc row).

GLIBC_TUNABLES is read once, when a process starts, so a script that finds it unset
re-executes itself (same process id, interpreter, arguments and environment, plus the
tunables) before doing anything else. Elsewhere than on glibc, or when GLIBC_TUNABLES
already sets malloc's huge pages (a user's own choice), nothing happens. Older glibc
versions ignore tunables they do not know.
"""
import os
import platform
import sys

TUNABLES = ('glibc.malloc.hugetlb=1', 'glibc.malloc.mmap_threshold=33554432',
            'glibc.malloc.trim_threshold=1073741824')
# Set in the re-executed process, so that it never re-executes again.
_DONE = 'RESNET_JAX_MALLOC_TUNED'


def tuned_environment(environ=None):
  """A copy of `environ` (default: this process's) with TUNABLES added, or None where they
  do not apply (not glibc, already tuned here, or huge pages chosen by the user)."""
  environ = os.environ if environ is None else environ
  existing = environ.get('GLIBC_TUNABLES', '')
  if (environ.get(_DONE) or 'glibc.malloc.hugetlb' in existing
      or platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc'):
    return None
  env = dict(environ, GLIBC_TUNABLES=':'.join(filter(None, (existing,) + TUNABLES)))
  env[_DONE] = '1'
  return env


def reexec_with_tuned_malloc() -> None:
  """Replaces this process with itself under TUNABLES, unless it is not needed (above)."""
  env = tuned_environment()
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
