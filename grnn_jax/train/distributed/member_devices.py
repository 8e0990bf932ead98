"""A population's members over a CPU's cores as host devices: how many to ask JAX for
before it starts (:mod:`grnn_jax._util.cpu_devices`), and the ``("members", "data")`` mesh over
them once it has. Shared by ``grnn train``, ``grnn sweep`` (``--host-devices``) and the
experiments.

By default ``gcd(P, cores)`` host devices, whole members on each; ``count=1`` keeps one
device. On a GPU or TPU the default device is not a host device and nothing changes.

Example:
  >>> from grnn_jax.train.distributed.member_devices import request_host_devices
  >>> request_host_devices(None) is None   # no population: nothing to split
  True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax

from grnn_jax._util.cpu_devices import cpu_device_count_fixed, population_host_devices, request_cpu_devices
from grnn_jax.train.distributed.sharding import population_mesh


class HostDevices(NamedTuple):
    """How many host devices a population asked for, and whether the user said so."""

    count: int
    explicit: bool


def request_host_devices(population: int | None, count: int | None = None) -> HostDevices | None:
    """Checks ``count`` (``--host-devices``) and asks JAX for the host devices; call it
    first, before anything starts JAX. None: the members stay on one device (or on the
    devices that ``--data-parallel`` names).

    Args:
      population: P, the members (None: no population).
      count: host devices to split the cores into; None: ``gcd(P, cores)`` unless JAX has
        started already (a notebook, a test), whose devices then stay as they are.

    Raises:
      ValueError: ``--host-devices`` without ``--population``, not positive, or not a
        divisor of the population.
    """
    n = count
    if n is not None and population is None:
        raise ValueError("--host-devices applies to --population P")
    if n is not None and n < 1:
        raise ValueError(f"--host-devices must be a positive integer; got {n}")
    if population is None:
        return None
    if n is not None and population % n:
        raise ValueError(f"--host-devices {n} must divide --population {population} (whole members "
                         "on every device)")
    if n is None and cpu_device_count_fixed():
        return None  # JAX already runs (a notebook, a test): its devices stay as they are
    want = n if n is not None else population_host_devices(population)
    if want > 1:
        request_cpu_devices(want)
    return HostDevices(want, n is not None)


def host_members_mesh(host: HostDevices | None, population: int):
    """The ``("members", "data")`` mesh of :func:`request_host_devices`'s host devices, or
    None (one device, or the default device is not a CPU).

    Raises:
      ValueError: ``--host-devices N`` asked for more host devices than JAX has (it had
        started with fewer).
    """
    if host is None or host.count == 1 or jax.default_backend() != "cpu":
        return None
    devices = jax.devices()
    count = host.count
    if len(devices) < count:
        if host.explicit:
            raise ValueError(f"--host-devices {count}: JAX has started with {len(devices)} host "
                             "device(s); the count is fixed when JAX starts (XLA_FLAGS="
                             "--xla_force_host_platform_device_count sets it too)")
        count = math.gcd(count, len(devices))
        if count == 1:
            return None
    return population_mesh(population, devices[:count])
