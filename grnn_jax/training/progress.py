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
      evals_since_best: evaluations since the best one (the early-stopping counter).
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

    def after_eval(self, step: int, nll: float) -> "RunProgress":
        """The progress after a validation score ``nll`` at ``step`` (a non-finite score
        never becomes the best)."""
        best = self.best_val_nll
        if math.isfinite(nll) and (best is None or nll < best):
            return dataclasses.replace(
                self, step=step, best_val_nll=float(nll), best_step=step, evals_since_best=0
            )
        return dataclasses.replace(self, step=step, evals_since_best=self.evals_since_best + 1)

    def replace(self, **changes) -> "RunProgress":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunProgress":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
