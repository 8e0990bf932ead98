"""Files written atomically: a temporary file beside the target, then ``os.replace``.

A crash or Ctrl-C while writing leaves either the old file or the new one, never
half of one, and no temporary file behind. Writers that do their own renaming (Orbax's
checkpoints) are shielded from Ctrl-C by :func:`interrupts_deferred` instead: an
interrupt that lands inside one of their steps would leave its temporary directory
half-renamed and the next save failing on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np
from grnn_jax._util import jsonio


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """Opens a temporary file beside ``path``; on a clean exit it replaces ``path``.

    Example:
      >>> import pathlib, tempfile
      >>> from grnn_jax._util.atomic import atomic_open
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
      >>> with atomic_open(p, "w") as f:
      ...     _ = f.write("done")
      >>> p.read_text(), sorted(q.name for q in p.parent.iterdir())
      ('done', ['a.txt'])
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Writes ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(jsonio.dumps(obj, indent=2, sort_keys=True))


def save_npz_atomic(path: str | os.PathLike, **arrays) -> None:
    """``np.savez(path, **arrays)``, atomically (``path`` is used as given, no ``.npz`` added)."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def interrupts_deferred():
    """Holds back Ctrl-C (SIGINT) until the block has finished, then delivers it.

    On the main thread only (the one Python delivers signals to); elsewhere it does
    nothing. A second Ctrl-C during the block is not lost either: one
    ``KeyboardInterrupt`` is raised when the block ends, where the previous handler
    would have raised it.

    Example:
      >>> import os, signal
      >>> from grnn_jax._util.atomic import interrupts_deferred
      >>> seen = []
      >>> previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append("interrupt"))
      >>> with interrupts_deferred():
      ...     os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
      ...     seen.append("the block went on")
      >>> seen
      ['the block went on', 'interrupt']
      >>> _ = signal.signal(signal.SIGINT, previous)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, caught[-1])
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt

