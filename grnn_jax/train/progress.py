"""The fit loop's progress: where the run is, its best validation score and its early-stopping
record. Checkpointed beside the train state as JSON, so a resumed run continues exactly."""

from __future__ import annotations

import dataclasses
import math


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
