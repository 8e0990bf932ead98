"""Keep freed memory inside the process (Linux with glibc), so that a train step's large
buffers are reused instead of being mapped afresh, and zeroed by the kernel, every step.

XLA:CPU allocates each execution's temporary buffers with ``malloc`` and frees them when
the step ends. glibc serves blocks above 32 MB, and every block of a thread that has its
own arena, with a fresh ``mmap`` and returns them with ``munmap``; the next step then
page-faults all of that memory back in. For the hidden-256 benchmark model
(``scripts/bench_train.py``) that is about 104 MB, 26,000 page faults and 45-75 ms of
kernel time in a 240 ms step. :func:`keep_freed_memory` makes glibc serve every thread
from one heap that is never unmapped or trimmed below 2 GB: no page faults in the
steady state, and the step's CPU time fell by 17-25 % (the numbers are in the README).

The price is that the process keeps its peak heap: memory freed after a large transient
allocation stays with the process (up to 2 GB of it) for reuse instead of going back to
the system, and all threads share one allocator lock. ``grnn`` (the command) and the
benchmark scripts call it at start; in a notebook, call it before the first JAX
computation (threads that already allocated keep their own arenas). Setting the
environment variable ``GRNN_KEEP_FREED_MEMORY=0`` turns it off everywhere.
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
    for large blocks, trimming only beyond 2 GB of free heap. Idempotent.

    Returns:
      True when the settings were applied; False on a platform without glibc (nothing
      changes there) or when ``GRNN_KEEP_FREED_MEMORY`` is ``0``.

    Example:
      >>> from grnn_jax.allocator import keep_freed_memory
      >>> import sys
      >>> keep_freed_memory() in (True, False)
      True
    """
    if os.environ.get(ENV_SWITCH, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl's mallopt is a no-op)
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
