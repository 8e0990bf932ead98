"""The fit loop's progress: where the run is, its best validation score and its early-stopping
record (checkpointed beside the train state as JSON, so a resumed run continues exactly), and
how that progress is shown while the loop runs (:func:`progress_bar`).

On a terminal (or in a Jupyter kernel) the display is a tqdm bar. Anywhere else (stderr
redirected to a log file, a pipe, a batch system) a bar's carriage-return frames pile up into
one enormous line, so the display prints one plain line per evaluation instead.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """Progress of a training run (immutable; every change returns a copy).

    Attributes:
      step: the global step this record describes.
      best_val_nll: the lowest validation NLL so far (original units), None before the first
        evaluation.
      best_step: the step of ``best_val_nll``.
      evals_since_best: evaluations since the smoothed score last improved (the
        early-stopping counter).
      smoothed_val_nll: the moving average of the validation NLL (see ``after_eval``).
      best_smoothed_val_nll: the lowest ``smoothed_val_nll`` so far.
      stopped_early: the run ended by early stopping; resuming it does not go on.

    Example:
      >>> p = RunProgress().after_eval(10, 2.0).after_eval(20, 2.5)
      >>> p.best_step, p.best_val_nll, p.evals_since_best
      (10, 2.0, 1)
      >>> RunProgress.from_dict(p.to_dict()) == p
      True
    """

    step: int = 0
    best_val_nll: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    smoothed_val_nll: float | None = None
    best_smoothed_val_nll: float | None = None

    def after_eval(self, step: int, nll: float, smoothing: float = 0.0) -> "RunProgress":
        """The progress after a validation score ``nll`` at ``step``.

        The best score and step follow the raw ``nll``; the early-stopping counter follows
        ``s <- smoothing * s + (1 - smoothing) * nll``, so one lucky or unlucky evaluation
        neither resets nor advances it alone. A non-finite score never becomes the best and
        leaves the average as it was.
        """
        best, sm, best_sm = self.best_val_nll, self.smoothed_val_nll, self.best_smoothed_val_nll
        new = dataclasses.replace(self, step=step)
        if not math.isfinite(nll):
            return new.replace(evals_since_best=self.evals_since_best + 1)
        if best is None or nll < best:
            new = new.replace(best_val_nll=float(nll), best_step=step)
        sm = float(nll) if sm is None else smoothing * sm + (1 - smoothing) * float(nll)
        if best_sm is None or sm < best_sm:
            return new.replace(smoothed_val_nll=sm, best_smoothed_val_nll=sm, evals_since_best=0)
        return new.replace(smoothed_val_nll=sm, evals_since_best=self.evals_since_best + 1)

    def replace(self, **changes) -> "RunProgress":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunProgress":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _is_interactive(stream) -> bool:
    """Whether ``stream`` is a terminal, or the output of a Jupyter kernel (where tqdm draws a
    widget)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class PlainProgress:
    """A progress display for logs: one line per evaluation, no carriage returns.

    It has tqdm's methods that the training loops use (``update``, ``set_postfix``, ``write``,
    ``close``) plus :meth:`evaluated`, the one that prints. ``set_postfix`` only remembers the
    fields, so the frequent training-loss updates between evaluations cost no output. A run
    that never evaluates prints one line when it closes, so a log still shows where it ended.

    Example:
      >>> import io
      >>> out = io.StringIO()
      >>> bar = PlainProgress(100, desc="train", file=out)
      >>> bar.update(50); bar.set_postfix(nll="1.2345"); bar.evaluated(val_nll="1.3000")
      >>> bar.close()
      >>> print(out.getvalue(), end="")
      train: step 50/100 (50%) nll=1.2345 val_nll=1.3000 [...s]
    """

    def __init__(self, total: int | None, *, initial: int = 0, desc: str = "", file=None):
        self.total, self.n, self.desc = total, int(initial), desc
        self._file = file
        self._fields: dict = {}
        self._start = time.perf_counter()
        self._printed = False
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **fields) -> None:
        self._fields.update(ordered_dict or {}, **fields)

    def evaluated(self, **fields) -> None:
        """Sets ``fields`` and prints the progress as one line."""
        self.set_postfix(**fields)
        self._print()

    def write(self, text: str) -> None:
        print(text, file=self._stream(), flush=True)

    def close(self) -> None:
        if not self._closed and not self._printed:
            self._print()
        self._closed = True

    def _stream(self):
        return self._file if self._file is not None else sys.stderr

    def _print(self) -> None:
        where = f"step {self.n}" if self.total is None else (
            f"step {self.n}/{self.total} ({100 * self.n // max(self.total, 1)}%)")
        elapsed = time.perf_counter() - self._start
        values = " ".join(f"{k}={v}" for k, v in self._fields.items())
        head = f"{self.desc}: " if self.desc else ""
        self.write(f"{head}{where}" + (f" {values}" if values else "") + f" [{elapsed:.1f}s]")
        self._printed = True


class _Bar:
    """A tqdm bar with :meth:`evaluated` (for it, an evaluation is one more postfix)."""

    def __init__(self, bar, file):
        self._bar, self._file = bar, file

    def __getattr__(self, name):
        return getattr(self._bar, name)

    def evaluated(self, **fields) -> None:
        self._bar.set_postfix(**fields)

    def write(self, text: str) -> None:
        """Prints ``text`` above the bar, on the bar's stream (nothing when it is disabled)."""
        if not self._bar.disable:
                self._bar.write(text, file=self._file if self._file is not None else sys.stderr)


def progress_bar(total: int | None, *, initial: int = 0, desc: str = "", enabled: bool = True,
                 file=None):
    """The training loops' progress display: a tqdm bar on a terminal, plain lines elsewhere.

    Use it as a tqdm bar (``update``, ``set_postfix``, ``write``, ``close``); call
    ``evaluated(**fields)`` after each validation, which is when a log gets its line.

    Args:
      total: the number of steps (None: unknown).
      initial: the step it starts from (a resumed run).
      desc: a label, e.g. ``"train"``.
      enabled: False shows nothing at all.
      file: where to write (default ``sys.stderr``); a terminal gets a bar, anything else
        (a file, a pipe, a captured stream) one line per evaluation.

    Example:
      >>> import io
      >>> bar = progress_bar(10, desc="train", file=io.StringIO())  # not a terminal
      >>> type(bar).__name__
      'PlainProgress'
    """
    stream = file if file is not None else sys.stderr
    if enabled and not _is_interactive(stream):
        return PlainProgress(total, initial=initial, desc=desc, file=file)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, file=file)
    return _Bar(bar, file)
