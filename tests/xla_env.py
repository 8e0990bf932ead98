"""XLA_FLAGS for subprocesses that must see one CPU device, as a user has."""

import os


def one_device_xla_flags() -> str:
    """This process's XLA_FLAGS without the fake device count (conftest.py sets both)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return " ".join(f for f in flags if not f.startswith("--xla_force_host_platform_device_count"))
