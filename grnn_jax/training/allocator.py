"""Host memory allocation for XLA:CPU programs that run many times.

Every run of a compiled step allocates its temporaries afresh (a recurrent network's
backward pass keeps every time step's activations: (T, P, B, H) buffers of 0.1-10 MB). With
glibc's default settings buffers above the (dynamic) mmap threshold are mapped and unmapped
on every call, and freed heap memory above 128 KB is returned to the system, so each run
touches fresh pages: one page fault per 4 KB, which on a busy virtual machine costs more than
the arithmetic. Measured with ``scripts/bench_population.py`` on the shared 2-core CPU
(hidden 32, batch 32 x 60): a population of 2 cost 8.2x one member with the defaults and
1.1-1.8x after :func:`retain_freed_memory`; of 8, 16-38x and 3.0x.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit


def retain_freed_memory() -> bool:
    """Asks glibc to serve buffers up to 32 MB from the heap and to keep freed memory for
    reuse instead of returning it to the system (``mallopt``). Process-wide; call it once,
    early, in a program that runs compiled steps many times (the ``grnn`` command does).

    Returns:
      True when the settings were applied (Linux with glibc), False elsewhere (a no-op).

    Example:
      >>> isinstance(retain_freed_memory(), bool)
      True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    return bool(ok)
