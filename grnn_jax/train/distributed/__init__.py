"""Training across devices and hosts: meshes with ``("members", "data")`` axes, data-parallel
steps, multi-process runs (process 0 writes), and a CPU's cores as host devices for
populations."""

from grnn_jax.train.distributed.data_parallel import is_writer
from grnn_jax.train.distributed.member_devices import (
    HostDevices,
    host_members_mesh,
    request_host_devices,
)
from grnn_jax.train.distributed.sharding import make_mesh, population_mesh, shard_batch

__all__ = [
    "HostDevices",
    "host_members_mesh",
    "is_writer",
    "make_mesh",
    "population_mesh",
    "request_host_devices",
    "shard_batch",
]
