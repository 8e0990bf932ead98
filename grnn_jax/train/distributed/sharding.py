"""Data-parallel training on a device mesh: the batch sharded, the train state replicated.

The mesh has the axes ``("members", "data")`` of the design: ``data`` splits
each batch's rows over devices, ``members`` is reserved for a population's
members (size 1 until populations exist). The train step is the ordinary one
(:func:`~grnn_jax.train.make_train_step`); called on a batch placed with
``NamedSharding(mesh, P("data"))`` and a state replicated with
``NamedSharding(mesh, P())``, the compiler partitions it: each device runs the
forward and backward pass on its rows and the gradient of the batch-mean loss
is summed across devices by an all-reduce it inserts. So the loss trajectory
is the single-device one up to the order of float sums.

A population (a leading member axis on the state and the batches) puts its members on the
``members`` axis and each member's batch rows on ``data``
(:func:`make_population_parallel_step`).

In a multi-process run (``jax.distributed``), each process builds only its own
rows of every batch (:func:`process_batch_rows`) and :func:`shard_batch`
assembles the global batch from the processes' pieces without copying data
between hosts.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from grnn_jax.data import Batch

AXES = ("members", "data")


def make_mesh(devices=None, *, n_members: int = 1) -> Mesh:
    """A ``("members", "data")`` mesh over ``devices`` (all by default), ``n_members`` x rest.

    Example:
      >>> from grnn_jax.train.distributed.sharding import make_mesh
      >>> mesh = make_mesh()
      >>> mesh.axis_names, mesh.shape["members"]
      (('members', 'data'), 1)
    """
    devices = np.asarray(jax.devices() if devices is None else list(devices))
    if n_members < 1 or devices.size % n_members:
        raise ValueError(f"n_members must be >= 1 and divide the {devices.size} devices; got {n_members}")
    return Mesh(devices.reshape(n_members, -1), AXES)


def replicate(tree, mesh: Mesh):
    """Places every leaf of ``tree`` on all devices of ``mesh`` (a replicated train state)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def _check_rows(n_rows: int, mesh: Mesh) -> None:
    n_data = mesh.shape["data"]
    if n_rows % n_data:
        raise ValueError(f"batch_size {n_rows} must be a multiple of the {n_data} devices on the mesh's "
                         f"'data' axis")


def process_batch_rows(batch_size: int, mesh: Mesh) -> slice:
    """The rows of each global batch this process feeds (all rows with one process).

    Rows go to devices in order, so a process's rows are those of its devices
    on the ``data`` axis; with one process that is every row.
    """
    _check_rows(batch_size, mesh)
    per_device = batch_size // mesh.shape["data"]
    mine = [i for i, d in enumerate(mesh.devices[0]) if d.process_index == jax.process_index()]
    if not mine or mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError("this process's devices must be one contiguous run of the mesh's 'data' axis")
    return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def shard_batch(batch: Batch, mesh: Mesh, *, global_rows: int | None = None) -> Batch:
    """The batch as global arrays sharded by rows over the mesh's ``data`` axis.

    Args:
      batch: with one process, the whole batch; with several, this process's
        rows of it (:func:`process_batch_rows`).
      mesh: from :func:`make_mesh`.
      global_rows: rows of the global batch (default: this batch's rows times
        the number of processes).

    Returns:
      A :class:`~grnn_jax.data.Batch` of ``jax.Array`` sharded ``P("data")``.
    """
    rows = NamedSharding(mesh, P("data"))
    n_local = int(np.shape(batch.x)[0])
    n_global = global_rows if global_rows is not None else n_local * jax.process_count()
    _check_rows(n_global, mesh)

    def put(a):
        if a is None:
            return None
        a = np.asarray(a)
        if jax.process_count() == 1:
            return jax.device_put(a, rows)
        return jax.make_array_from_process_local_data(rows, a, (n_global, *a.shape[1:]))

    return Batch(put(batch.x), put(batch.lengths), put(batch.u))


def make_data_parallel_step(train_step, mesh: Mesh):
    """``step(state, batch, key=None)`` running ``train_step`` with the batch sharded and the
    state replicated (``key``: the run's noise key, for a step with training-time noise).

    Args:
      train_step: from :func:`~grnn_jax.train.make_train_step`.
      mesh: from :func:`make_mesh`.

    Returns:
      A function of a (replicated, :func:`replicate`) state and a host batch
      (see :func:`shard_batch`), returning ``(state, metrics)`` as ``train_step`` does.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import Sequences, batch_at
      >>> from grnn_jax.train import ModelConfig, init_state, make_optimizer, make_train_step
      >>> from grnn_jax.train.distributed import sharding
      >>> net = ModelConfig(n_features=1, n_components=2, hidden_size=4).build()
      >>> tx = make_optimizer(learning_rate=1e-2, num_steps=5, warmup_steps=0,
      ...                     weight_decay=0.0, clip_norm=1.0)
      >>> b = batch_at(Sequences(np.random.default_rng(0).normal(size=(8, 6, 1))), 0,
      ...              batch_size=8, seed=0)
      >>> mesh = sharding.make_mesh()
      >>> state = sharding.replicate(init_state(net, tx, b, key=jax.random.key(0)), mesh)
      >>> state, m = sharding.make_data_parallel_step(make_train_step(net, tx), mesh)(state, b)
      >>> int(state.step), int(m["n_obs"])
      (1, 48)
    """
    replicated = NamedSharding(mesh, P())

    def step(state, batch: Batch, key=None):
        state, metrics = train_step(state, shard_batch(batch, mesh), key)
        # The state stays replicated (the compiler may choose otherwise for some leaves).
        return jax.device_put(state, replicated), metrics

    return step


def population_mesh(population: int, devices=None) -> Mesh:
    """A mesh for a population of ``population`` members: ``gcd(population, devices)``
    devices on ``members`` (whole members per device group), the rest on ``data``.

    Example:
      >>> from grnn_jax.train.distributed.sharding import population_mesh
      >>> dict(population_mesh(4, jax.devices()[:1]).shape)
      {'members': 1, 'data': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    return make_mesh(devices, n_members=math.gcd(int(population), len(devices)))


def check_population_mesh(mesh: Mesh, population: int, batch_size: int) -> None:
    """A one-line ValueError unless ``mesh`` can hold ``population`` members' batches."""
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != AXES:
        raise ValueError(f"mesh must be a jax Mesh with axes {AXES} (training.sharding.make_mesh); "
                         f"got {getattr(mesh, 'axis_names', type(mesh).__name__)}")
    if jax.process_count() > 1:
        raise ValueError("population training runs in one process (its devices may be many)")
    if population % mesh.shape["members"]:
        raise ValueError(f"the population of {population} must be a multiple of the "
                         f"{mesh.shape['members']} devices on the mesh's 'members' axis")
    _check_rows(batch_size, mesh)


def make_population_parallel_step(population_step, mesh: Mesh):
    """``step(state, batch, active, keys=None)`` running a population step (leading member axis
    on every leaf of ``state``, ``batch`` and ``keys``) with the members split over the mesh's
    ``members`` axis and each member's batch rows over its ``data`` axis."""
    members = NamedSharding(mesh, P("members"))
    rows = NamedSharding(mesh, P("members", "data"))

    def step(state, batch: Batch, active, keys=None):
        batch = Batch(*(None if a is None else jax.device_put(np.asarray(a), rows) for a in batch))
        if keys is not None:
            keys = jax.device_put(keys, members)
        state, metrics = population_step(state, batch, jax.device_put(np.asarray(active), members),
                                         keys)
        return jax.device_put(state, members), metrics

    return step
