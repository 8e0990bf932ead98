"""When a training run evaluates, when non-finite steps end it, and when it stops early: the
rule a single run (:func:`grnn_jax.train.train`) and every member of a population
(:func:`grnn_jax.train.populations.population.train_population`) follow.

* **Cadence.** With validation data a run evaluates every ``eval_every`` steps and after its
  last step; it reads its training metrics on the host every ``log_every`` steps and at the
  last step of a call.
* **Skip limit.** A step with a non-finite loss or gradient is skipped; once
  ``max_consecutive_skips`` steps in a row were (judged when the metrics are read), the run
  ends (a single run raises, a population member is frozen).
* **Early stopping.** Each evaluation updates a :class:`~grnn_jax.train.progress.RunProgress`:
  the best checkpoint follows the raw validation NLL, patience an exponential moving average
  of it (``val_smoothing``). The run stops after ``patience`` evaluations without a better
  smoothed score, but never before ``stop_from_fraction`` of ``num_steps`` (0 patience: never).

The judgements take an array of members where a population needs one (:meth:`StoppingRule.diverged`,
:meth:`StoppingRule.out_of_patience`, :meth:`StoppingRule.after_evals`) and return numpy
booleans; a single run passes scalars.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from grnn_jax.train.progress import RunProgress


@dataclasses.dataclass(frozen=True)
class StoppingRule:
    """The evaluation cadence, skip limit and early-stopping rule of a run's settings (the
    :class:`~grnn_jax.train.TrainConfig` fields of the same names; :meth:`of` reads them).

    Example:
      >>> rule = StoppingRule(num_steps=100, eval_every=10, log_every=5, patience=2,
      ...                     stop_from_fraction=0.5)
      >>> [s for s in range(1, 101) if rule.evaluates_at(s)][:3]
      [10, 20, 30]
      >>> prog = RunProgress()
      >>> for step, nll in ((50, 1.0), (60, 1.2), (70, 1.1)):
      ...     prog, improved, stop = rule.after_eval(prog, step, nll)
      >>> prog.best_step, improved, stop
      (50, False, True)
      >>> rule.diverged(np.array([0, 25])).tolist()
      [False, True]
    """

    num_steps: int
    eval_every: int
    log_every: int
    patience: int = 0
    stop_from_fraction: float = 0.0
    val_smoothing: float = 0.0
    max_consecutive_skips: int = 20

    @classmethod
    def of(cls, config) -> "StoppingRule":
        """The rule of a :class:`~grnn_jax.train.TrainConfig`."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def evaluates_at(self, done: int) -> bool:
        """Whether a run with validation data evaluates after ``done`` steps."""
        return done % self.eval_every == 0 or done == self.num_steps

    def reads_metrics_at(self, done: int, end: int) -> bool:
        """Whether the training metrics are read (and the skip limit judged) after ``done``
        steps of a call that ends at step ``end``."""
        return done % self.log_every == 0 or done == end

    def diverged(self, n_consecutive_skipped):
        """Whether the skip limit is reached, per member for an array of counts."""
        return np.asarray(n_consecutive_skipped) >= self.max_consecutive_skips

    def out_of_patience(self, evals_since_best, done: int):
        """Whether a run whose smoothed score last improved ``evals_since_best`` evaluations
        ago stops after ``done`` steps, per member for an array of counts."""
        waited = np.asarray(evals_since_best) >= self.patience
        return waited & bool(self.patience) & (done >= self.stop_from_fraction * self.num_steps)

    def after_eval(self, prog: RunProgress, done: int, nll) -> tuple[RunProgress, bool, bool]:
        """One evaluation of a run.

        Args:
          prog: the run's progress before it.
          done: the steps taken.
          nll: the validation NLL (original units).

        Returns:
          ``(progress, improved, stop)``: the progress after the score (``stopped_early``
          left for the caller to record, once it has saved the best parameters); whether
          these parameters are the new best; whether the run stops here.
        """
        prog = prog.after_eval(done, nll, self.val_smoothing)
        return prog, prog.best_step == done, bool(self.out_of_patience(prog.evals_since_best, done))

    def after_evals(self, progs: Sequence[RunProgress], done: int, nlls,
                    active) -> tuple[list[RunProgress], np.ndarray, np.ndarray]:
        """:meth:`after_eval` for the ``active`` members of a population.

        Args:
          progs: P progress records.
          done: the steps taken.
          nlls: (P,) validation NLLs.
          active: (P,) which members are still training; the others keep their record.

        Returns:
          ``(progs, improved (P,), stop (P,))``, False for inactive members.
        """
        progs = list(progs)
        improved = np.zeros(len(progs), bool)
        stop = np.zeros(len(progs), bool)
        for i in np.flatnonzero(active):
            progs[i], improved[i], stop[i] = self.after_eval(progs[i], done, float(nlls[i]))
        return progs, improved, stop
