"""Orbax checkpoints of a run: ``checkpoints/last`` (every evaluation and at the end) and
``checkpoints/best`` (the lowest validation NLL so far), each the train state plus a JSON
record of the loop's progress (best score, patience counter) so a resumed run continues
exactly. Orbax writes into a temporary directory and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the one that is found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

KINDS = ("last", "best")


class RunCheckpoints:
    """The two checkpoint managers of a work dir.

    Args:
      workdir: the run's directory (``checkpoints/`` is created inside on first save).
      read_only: open existing checkpoints without creating anything.
    """

    def __init__(self, workdir: str | Path, *, read_only: bool = False):
        root = Path(workdir).resolve() / "checkpoints"
        self._managers = {}
        for kind in KINDS:
            if read_only:
                options = ocp.CheckpointManagerOptions(
                    create=False, read_only=True, save_interval_steps=0,
                    enable_async_checkpointing=False,
                )
            else:
                options = ocp.CheckpointManagerOptions(
                    max_to_keep=1, create=True, enable_async_checkpointing=False
                )
            self._managers[kind] = ocp.CheckpointManager(root / kind, options=options)

    def latest_step(self, kind: str) -> int | None:
        return self._managers[kind].latest_step()

    def save(self, kind: str, state: Any, progress: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and ``progress`` (JSON) at ``progress['step']``."""
        mngr = self._managers[kind]
        step = int(progress["step"])
        if step in mngr.all_steps():
            return
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
        return out["state"], dict(out["progress"])

    def close(self) -> None:
        for mngr in self._managers.values():
            mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
