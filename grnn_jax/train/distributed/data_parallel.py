"""The fit loop on a device mesh and across processes: where the state and the batches live,
which process writes, and what the others are sent.

With a mesh (:func:`~grnn_jax.train.distributed.sharding.make_mesh`), :func:`~grnn_jax.train.train`
keeps the train state replicated and shards the rows of every batch over the mesh's
``data`` axis; the compiler sums the gradient across devices, so the run follows the
single-device trajectory up to the order of float sums.

With several processes (``jax.distributed``, see :func:`grnn_jax.em.distributed.initialize`)
the mesh spans every process's devices and

- each process gathers only its rows of every batch
  (:func:`~grnn_jax.train.distributed.sharding.process_batch_rows`);
- process 0 alone touches the work dir: it checks a saved run, writes ``config.json``,
  ``metrics.jsonl`` and the checkpoints, and sends the others what it read (the settings,
  the restored state and progress), so all processes start from the same replica;
- the validation sequences are split over the processes and their log-likelihoods
  summed, so every process gets the same validation NLL and takes the same
  best-checkpoint and early-stopping decisions;
- a check that fails on process 0 fails on every process, with its message.

Checkpoints stay process 0's single-writer Orbax checkpoints: the state is replicated, so
process 0 holds all of it and writes it with its own (atomic) checkpoint managers while
the others wait at the next collective; no shared file system is needed for the work dir.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from grnn_jax.data import Sequences
from grnn_jax.em.distributed import gather_over_processes, process_rows
from grnn_jax.train.distributed.sharding import AXES, make_mesh, process_batch_rows, replicate
from grnn_jax.train.step import evaluate
from grnn_jax._util import jsonio


def is_writer() -> bool:
    """True on the process that writes a run's files (process 0; the only one alone)."""
    return jax.process_index() == 0


def run_mesh(mesh: Mesh | None, batch_size: int) -> tuple[Mesh | None, slice | None]:
    """``(mesh, rows)``: the mesh a run trains on and the rows of every batch this process
    gathers; ``(None, None)`` for the single-device path (one process, no mesh).

    With several processes and no mesh, the mesh is :func:`make_mesh` over every device.

    Raises:
      ValueError: ``mesh`` is not a ``("members", "data")`` mesh with one member, or
        ``batch_size`` is not a multiple of its ``data`` axis.

    Example:
      >>> import jax
      >>> from grnn_jax.train.distributed.data_parallel import run_mesh
      >>> from grnn_jax.train.distributed.sharding import make_mesh
      >>> run_mesh(None, 8)
      (None, None)
      >>> mesh, rows = run_mesh(make_mesh(jax.devices()[:2]), 8)
      >>> dict(mesh.shape), rows
      ({'members': 1, 'data': 2}, slice(0, 8, None))
    """
    if mesh is None and jax.process_count() == 1:
        return None, None
    if mesh is None:
        mesh = make_mesh()
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != AXES:
        raise ValueError(f"mesh must be a jax Mesh with axes {AXES} (training.sharding.make_mesh); "
                         f"got {getattr(mesh, 'axis_names', type(mesh).__name__)}")
    if mesh.shape["members"] != 1:
        raise ValueError(f"mesh has {mesh.shape['members']} devices on its 'members' axis; train() "
                         "trains one model (make_mesh(n_members=1))")
    return mesh, process_batch_rows(batch_size, mesh)


def local_copy(tree):
    """A replicated pytree as arrays on one of this process's devices (nothing crosses hosts).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax.train.distributed.data_parallel import local_copy
      >>> from grnn_jax.train.distributed.sharding import make_mesh, replicate
      >>> tree = replicate({"w": jnp.ones(3)}, make_mesh(jax.devices()[:2]))
      >>> len(local_copy(tree)["w"].devices())
      1
    """
    return jax.tree.map(lambda a: a.addressable_shards[0].data if isinstance(a, jax.Array) else a,
                        tree)


def saved_form(state):
    """What process 0 checkpoints of a replicated state: its local copy, as numpy arrays in a
    multi-process run (Orbax there takes only global arrays or host arrays)."""
    state = local_copy(state)
    return jax.device_get(state) if jax.process_count() > 1 else state


def share_json(obj):
    """Process 0's ``obj`` (JSON) on every process; ``obj`` itself with one process.

    Example:
      >>> from grnn_jax.train.distributed.data_parallel import share_json
      >>> share_json({"step": 3})
      {'step': 3}
    """
    if jax.process_count() == 1:
        return obj
    data = np.frombuffer(jsonio.dumps(obj).encode(), np.uint8) if is_writer() else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.array(data.size, np.int32)))
    buf = np.zeros(n, np.uint8)
    if is_writer():
        buf[:] = data
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8).tobytes())


def share_state(state, mesh: Mesh):
    """Process 0's ``state`` replicated over ``mesh`` on every process."""
    if jax.process_count() > 1:
        state = multihost_utils.broadcast_one_to_all(jax.device_get(state))
    return replicate(state, mesh)


def agree(ok: bool, message: str) -> None:
    """Raises ``ValueError(message)`` on every process unless ``ok`` holds on all of them
    (``message`` names the processes where it failed)."""
    flags = np.asarray(gather_over_processes(np.array([bool(ok)]))).reshape(-1)
    if not flags.all():
        bad = ", ".join(str(i) for i in np.flatnonzero(~flags))
        raise ValueError(message.format(processes=bad))


def barrier(name: str) -> None:
    """Every process waits here for the others (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def evaluate_nll(net, variables, seqs: Sequences, standardiser) -> float:
    """Held-out NLL per observed step (original units) of replicated ``variables``.

    One process evaluates every sequence on one of its devices; several split the
    sequences and sum their log-likelihoods, so all of them get the same number.
    """
    variables = local_copy(variables)
    if jax.process_count() == 1:
        return evaluate(net, variables, seqs, standardiser=standardiser).nll
    start, stop = process_rows(seqs.n_sequences)
    ll, n = 0.0, 0
    if stop > start:
        res = evaluate(net, variables, seqs.select(slice(start, stop)), standardiser=standardiser)
        ll, n = res.log_likelihood, res.n_steps
    # float64 travels as pairs of uint32: without x64 the collective would round it to float32.
    parts = np.asarray(gather_over_processes(np.array([ll, n], np.float64).view(np.uint32)))
    total_ll, total_n = parts.reshape(-1, 4).copy().view(np.float64).sum(axis=0)
    return float(-total_ll / total_n)


def decided_by_writer(decide, encode, decode):
    """``decide()`` run on process 0 alone (e.g. the checks that read the work dir), its
    result sent to every process as ``decode(encode(result))``.

    An exception in ``decide`` is raised on process 0 as it is and on the others as a
    ValueError with its message, so every process stops with the same line.

    Example:
      >>> from grnn_jax.train.distributed.data_parallel import decided_by_writer
      >>> decided_by_writer(lambda: (1, 2), list, tuple)  # one process: decide() itself
      (1, 2)
    """
    if jax.process_count() == 1:
        return decide()
    if is_writer():
        try:
            out = decide()
        except Exception as err:
            share_json({"error": str(err)})
            raise
        share_json({"value": encode(out)})
        return out
    got = share_json(None)
    if "error" in got:
        raise ValueError(got["error"])
    return decode(got["value"])
