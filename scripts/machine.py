"""What the benchmark scripts print about the machine they ran on (a speed ratio measured on
one CPU kind may flip on another, so every table names its CPU)."""

from __future__ import annotations

import os
import platform


def cpu_description() -> tuple[str, bool]:
    """(CPU model name, whether it has AVX-512F), from /proc/cpuinfo where there is one."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    return name, "avx512f" in info.get("flags", "").split()


def cpu_line() -> str:
    """The CPU model and whether it has AVX-512, for a benchmark's header: "AMD EPYC (AVX-512)"."""
    name, avx512 = cpu_description()
    return f"{name} ({'AVX-512' if avx512 else 'no AVX-512'})"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a"."""
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"
