"""``--host-devices``, shared by ``grnn train`` and ``grnn sweep``: a population's members
split over the CPU's cores as host devices (:mod:`grnn_jax.train.distributed.member_devices`)."""

from __future__ import annotations


def add_host_devices_flag(group) -> None:
    """Adds ``--host-devices`` to an argparse parser or argument group."""
    group.add_argument("--host-devices", type=int, metavar="N",
                       help="with --population P on a CPU: split the cores into N JAX devices and "
                            "the members over them, each device on its own thread (default "
                            "gcd(P, cores) when the command starts JAX; 1: one device)")
