"""A CPU host's cores as several JAX devices, for work that splits into independent parts.

XLA:CPU runs a device's program one operation after another, each spread over the
cores by its intra-op threads; the small operations of a small model (an LSTM of
hidden 32) keep little more than one core busy. Several host devices each execute
their program on a thread of their own, so a population whose members are split over
two host devices (:func:`grnn_jax.train.distributed.sharding.population_mesh`) keeps both
cores of a 2-core machine busy: 8 hidden-32 members trained 1.4-1.6x faster than on
one device (``scripts/bench_population.py --devices 2``).

JAX fixes the number of host devices when it starts its backends (the first array
or ``jax.devices()`` call), so :func:`request_cpu_devices` must run before that, as
``grnn train --population P`` does first thing. It leaves a count the user fixed
(``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or ``jax_num_cpu_devices``)
as it is. On a machine with a GPU or TPU the request only shapes the CPU backend,
which the default device does not use.

Only public JAX is used: JAX refuses a new ``jax_num_cpu_devices`` once its backends have
started (a ``RuntimeError`` from ``jax.config.update``), and that refusal is how
:func:`backends_started` tells, since JAX has no public query for it.
"""

from __future__ import annotations

import math
import os

import jax

_XLA_FLAG = "--xla_force_host_platform_device_count"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one).

    Example:
      >>> available_cores() >= 1
      True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def population_host_devices(population: int, cores: int | None = None) -> int:
    """Host devices for a population of ``population`` members: ``gcd(population, cores)``,
    so that every device holds as many whole members (and one core each).

    Example:
      >>> population_host_devices(8, cores=2), population_host_devices(3, cores=2)
      (2, 1)
    """
    return math.gcd(int(population), available_cores() if cores is None else int(cores))


def _user_chose_count() -> bool:
    """Whether the user fixed the count: ``XLA_FLAGS`` or the ``jax_num_cpu_devices`` option."""
    flagged = any(f.startswith(_XLA_FLAG) for f in os.environ.get("XLA_FLAGS", "").split())
    return flagged or jax.config.jax_num_cpu_devices >= 0


def _set_cpu_device_count(n: int) -> bool:
    """Sets ``jax_num_cpu_devices`` to ``n``; False where JAX refused (its backends started)."""
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX's own rule: the option must be set before its backends start
        return False
    return True


def backends_started() -> bool:
    """Whether JAX has started its backends (the first array or ``jax.devices()`` call),
    after which the number of host devices can no longer change.

    It asks JAX to change ``jax_num_cpu_devices`` and puts the value back; JAX refuses the
    change once started. Nothing is left changed either way.

    Example:
      >>> import jax
      >>> _ = jax.devices()
      >>> backends_started()
      True
    """
    current = jax.config.jax_num_cpu_devices
    if not _set_cpu_device_count(current + 1 if current >= 1 else 1):
        return True
    jax.config.update("jax_num_cpu_devices", current)
    return False


def cpu_device_count_fixed() -> bool:
    """Whether the number of host devices is already fixed: by the user (``XLA_FLAGS`` or
    the ``jax_num_cpu_devices`` option) or because JAX has started its backends."""
    return _user_chose_count() or backends_started()


def request_cpu_devices(n: int) -> bool:
    """Asks JAX for ``n`` host devices; True when this call set the count.

    Nothing changes (False) where :func:`cpu_device_count_fixed`: a count the user chose
    wins, and a started backend keeps its devices.

    Raises:
      ValueError: ``n`` is not a positive integer.

    Example:
      >>> import jax
      >>> _ = jax.devices()  # the backend has started: the count can no longer change
      >>> request_cpu_devices(2)
      False
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of host devices must be a positive integer; got {n!r}")
    return not _user_chose_count() and _set_cpu_device_count(n)
