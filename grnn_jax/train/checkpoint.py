"""Orbax checkpoints of a run: ``checkpoints/last`` (every evaluation and at the end) and
``checkpoints/best`` (the lowest validation NLL so far), each the train state plus a JSON
record of the loop's progress (best score, patience counter) so a resumed run continues
exactly. Orbax writes into a temporary directory and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the one that is found; Ctrl-C waits until the
save is complete (:func:`grnn_jax._util.atomic.interrupts_deferred`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from grnn_jax._util.atomic import interrupts_deferred

KINDS = ("last", "best")


class RunCheckpoints:
    """The two checkpoint managers of a work dir.

    Args:
      workdir: the run's directory (``checkpoints/`` is created inside on first save).
      read_only: open existing checkpoints without creating anything.
      this_process_only: in a multi-process run, this process alone saves and restores
        (the others never call these managers); Orbax then synchronises no other process.
    """

    def __init__(self, workdir: str | Path, *, read_only: bool = False,
                 this_process_only: bool = False):
        root = Path(workdir).resolve() / "checkpoints"
        self._managers = {}
        extra = {}
        alone = this_process_only and jax.process_count() > 1 and not read_only
        if alone:
            me = jax.process_index()
            extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me})
        for kind in KINDS:
            if alone:  # Orbax creates no directory for a subset of processes
                (root / kind).mkdir(parents=True, exist_ok=True)
            if read_only:
                options = ocp.CheckpointManagerOptions(
                    create=False, read_only=True, save_interval_steps=0,
                    enable_async_checkpointing=False,
                )
            else:
                options = ocp.CheckpointManagerOptions(
                    max_to_keep=1, create=not alone, enable_async_checkpointing=False, **extra
                )
            self._managers[kind] = ocp.CheckpointManager(root / kind, options=options)

    def latest_step(self, kind: str) -> int | None:
        return self._managers[kind].latest_step()

    def save(self, kind: str, state: Any, progress: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and ``progress`` (JSON) at ``progress['step']``.

        The arrays are written as host arrays: a checkpoint records no device layout, so a
        state trained on several devices (a population split over host devices, a replicated
        data-parallel state) restores on whatever devices the reading process has. In a
        multi-process run, pass this process's copy of a replicated state
        (:func:`~grnn_jax.train.distributed.data_parallel.saved_form`).
        """
        mngr = self._managers[kind]
        step = int(progress["step"])
        if step in mngr.all_steps():
            return
        state = jax.device_get(state)
        with interrupts_deferred():
            mngr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)
                ),
            )
            mngr.wait_until_finished()

    def restore(self, kind: str, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """(state, progress) of the latest (or given) checkpoint of ``kind``.

        Raises:
          FileNotFoundError: there is no such checkpoint.
        """
        mngr = self._managers[kind]
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no '{kind}' checkpoint in {mngr.directory}")
        out = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()
            ),
        )
        state = out["state"]
        # Uncommitted, as freshly made arrays are: committed ones would make every jitted
        # function compile again after a restore (the placement is part of the program).
        state = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)) if isinstance(a, jax.Array)
                             and isinstance(a.sharding, jax.sharding.SingleDeviceSharding) else a, state)
        return state, dict(out["progress"])

    def close(self) -> None:
        for mngr in self._managers.values():
            mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
