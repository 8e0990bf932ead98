"""Keep freed memory inside the process (Linux with glibc), so that a train step's large
buffers are reused instead of being mapped afresh, and zeroed by the kernel, every step.

XLA:CPU allocates each execution's temporary buffers with ``malloc`` and frees them when
the step ends. glibc serves blocks above 32 MB, and blocks above 64 MB of every thread
that has its own arena, with a fresh ``mmap`` and returns them with ``munmap``; the next
step page-faults all of that memory in again. For the hidden-256 benchmark model
(``scripts/bench_train.py``) that is about 104 MB, 26,000 page faults and 45-75 ms of
kernel time in a 240 ms step. :func:`keep_freed_memory` makes glibc serve every thread
from one heap that is never unmapped, nor trimmed below 2 GB of free space: no page
faults in the steady state, and 28 % more steps per second for that model.

It is opt-in because it costs small models: with one arena, the many small allocations
of XLA's threads and of Python wait on one lock, and an 8-member population of hidden-32
LSTMs ran 12 % slower, one member 17 % slower (``scripts/bench_population.py``). It also
keeps the process's peak heap: memory freed after a large transient allocation stays
with the process (up to 2 GB of it) instead of going back to the system. The ``grnn``
command applies it when ``GRNN_KEEP_FREED_MEMORY=1``; in Python, call it before the first
JAX computation (threads that already allocated keep their own arenas).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: about 2 GB

ENV_SWITCH = "GRNN_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Makes glibc keep freed memory for reuse: one arena for every thread, no ``mmap``
    for large blocks, trimming only beyond 2 GB of free heap. Idempotent; see the module
    docstring for when it pays.

    Returns:
      True when the settings were applied; False on a platform without glibc, where
      nothing changes.

    Example (first thing in a script; not run here, as it changes the whole process)::

      from grnn_jax._util.allocator import keep_freed_memory
      keep_freed_memory()
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl's mallopt is a no-op)
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def keep_freed_memory_if_asked() -> bool:
    """:func:`keep_freed_memory` when the environment variable ``GRNN_KEEP_FREED_MEMORY``
    is ``1``; False (nothing changed) otherwise.

    Example:
      >>> import os
      >>> from grnn_jax._util.allocator import ENV_SWITCH, keep_freed_memory_if_asked
      >>> keep_freed_memory_if_asked() == (os.environ.get(ENV_SWITCH) == "1")
      True
    """
    return os.environ.get(ENV_SWITCH, "").strip() == "1" and keep_freed_memory()
