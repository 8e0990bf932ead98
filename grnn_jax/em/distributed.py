"""Several processes (hosts) fitting one mixture: ``jax.distributed`` set-up and reductions.

Each process reads only its own slice of the rows (:func:`process_rows`) and
sums its statistics over its chunks; the per-process sums are then added
across processes with JAX's own collectives (``multihost_utils.process_allgather``,
gloo on CPU, NCCL on GPU, ICI on TPU). Every process ends a pass with the same
totals and runs the same (replicated) M-step, so all hold the same mixture.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import jax
import numpy as np

from grnn_jax._util.validation import check_int


def parse_coordinator(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``, or a ValueError naming the problem.

    Example:
      >>> from grnn_jax.em.distributed import parse_coordinator
      >>> parse_coordinator("10.0.0.1:1234")
      ('10.0.0.1', 1234)
    """
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator must be HOST:PORT with a port in 1..65535; got {address!r}")
    return host, int(port)


def check_processes(num_processes, process_id) -> tuple[int, int]:
    """Checks that ``0 <= process_id < num_processes``; returns both as ints."""
    p = check_int(num_processes, "num_processes")
    i = check_int(process_id, "process_id", minimum=0)
    if i >= p:
        raise ValueError(f"process_id {i} is out of range for num_processes {p} (ids are 0..{p - 1})")
    return p, i


def initialize(coordinator: str, num_processes: int | None = None, process_id: int | None = None, *,
               timeout: float = 60.0) -> None:
    """Joins a multi-process JAX run (``jax.distributed.initialize``) with checked arguments.

    Call it first, before anything else touches JAX (a second call with the
    same ``num_processes`` and ``process_id`` does nothing). Process 0 hosts the
    coordinator at ``coordinator``; the others wait for it to accept
    connections for at most ``timeout`` seconds and then raise a ValueError
    (jax's own time-out aborts the process instead). Process 0 waits
    ``timeout`` seconds for all others to join; past that jax aborts it with
    ``DEADLINE_EXCEEDED``. On CPU the collectives use gloo.

    ``coordinator="auto"`` leaves everything to ``jax.distributed.initialize``'s
    detection of SLURM (``SLURM_*`` variables), Open MPI and Cloud TPU
    (``TPU_WORKER_*``, ``MEGASCALE_*`` or the TPU VM's metadata), see docs/scaling.md.

    Args:
      coordinator: ``HOST:PORT`` of process 0, reachable from every process, or "auto".
      num_processes: P (None with "auto").
      process_id: this process's index in ``0..P-1`` (None with "auto").
      timeout: seconds to wait for the coordinator and the other processes.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds; got {timeout}")
    if coordinator == "auto":
        if not jax.distributed.is_initialized():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(num_processes=num_processes, process_id=process_id,
                                       initialization_timeout=max(int(timeout), 1))
        _announce()
        return
    host, port = parse_coordinator(coordinator)
    p, i = check_processes(num_processes, process_id)
    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (p, i):
            raise ValueError(f"this process already runs as process {jax.process_index()} of "
                             f"{jax.process_count()}, not {i} of {p}")
        return
    if i != 0:
        _wait_for(host, port, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A process that fails leaves the others waiting in a collective; the shutdown time-out
    # bounds how long until the runtime stops them too.
    jax.distributed.initialize(coordinator, p, i, initialization_timeout=max(int(timeout), 1),
                               shutdown_timeout_seconds=max(int(timeout), 1))
    _announce()
    # Every process checks the same table, so all of them stop together if any launch disagrees.
    table = gather_over_processes(np.array([p, i, jax.process_count(), jax.process_index()]))
    if (table[:, 0] != table[:, 2]).any() or (table[:, 1] != table[:, 3]).any():
        said = ", ".join(f"{int(b)} of {int(a)}" for a, b, _, _ in table)
        raise ValueError(f"the processes were launched with disagreeing num_processes/process_id "
                         f"(as process i of P: {said}); the run has {jax.process_count()} processes")


def _announce() -> None:
    # The collectives library announces its connections on stdout when the
    # first collective runs; do that now with stdout pointed at stderr, so that
    # a process's stdout holds only what the program prints (e.g. one JSON line).
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        gather_over_processes(np.zeros(1))
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _wait_for(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ValueError(f"cannot reach the coordinator {host}:{port} within {timeout:g} s "
                                 f"({err.strerror or err}); is process 0 running there?") from None
            time.sleep(0.1)


def process_rows(n_rows: int, process_index: int | None = None, process_count: int | None = None) -> tuple[int, int]:
    """``(start, stop)``: the contiguous slice of ``n_rows`` rows this process reads.

    Example:
      >>> from grnn_jax.em.distributed import process_rows
      >>> [process_rows(10, i, 3) for i in range(3)]
      [(0, 4), (4, 7), (7, 10)]
    """
    i = jax.process_index() if process_index is None else process_index
    p = jax.process_count() if process_count is None else process_count
    base, extra = divmod(n_rows, p)
    start = i * base + min(i, extra)
    return start, start + base + (1 if i < extra else 0)


def _gather(tree):
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(jax.tree.map(np.asarray, tree))


def sum_over_processes(tree):
    """The sum of a pytree of arrays over all processes (itself with one process); numpy leaves."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    return jax.tree.map(lambda a: np.sum(a, axis=0), _gather(tree))


def max_over_processes(tree):
    """The elementwise maximum over all processes (itself with one process); numpy leaves."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    return jax.tree.map(lambda a: np.max(a, axis=0), _gather(tree))


def gather_over_processes(tree):
    """Every process's pytree stacked on a leading axis of size P (P=1 with one process)."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda a: np.asarray(a)[None], tree)
    return _gather(tree)
