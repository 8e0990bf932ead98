"""Whether training stopped while the validation score was still improving.

A run whose best validation NLL came at its last evaluation had not converged: the score was
still falling when the step budget ran out, so more steps would likely have given a better
model. Early stopping never leaves a run in that state (it stops only after evaluations
without improvement), so the cause is a ``num_steps`` too small for the data and settings.
These functions decide it from what the runs record, and word the warning that ``grnn
train`` and ``grnn sweep`` print.
"""

from __future__ import annotations

import math


def still_improving(best_step: int | None, last_step: int | None) -> bool:
    """True when the best validation score came at the last step evaluated (or later).

    Args:
      best_step: the step of the best validation NLL (None: never evaluated, or never finite).
      last_step: the last step the run evaluated or reached.

    Example:
      >>> still_improving(1000, 1000), still_improving(600, 1000), still_improving(None, 1000)
      (True, False, False)
    """
    return best_step is not None and last_step is not None and int(best_step) >= int(last_step)


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def budget_warning(best_step: int | None, last_step: int | None) -> str | None:
    """The warning for one run (or a population's kept member) whose best validation NLL
    came at ``last_step``, else None.

    Example:
      >>> budget_warning(600, 1000) is None
      True
      >>> print(budget_warning(1000, 1000))
      warning: the best validation NLL came at the last evaluation (step 1000): it was still
      falling when training stopped, so the model has probably not converged; the budget may
      be too short (raise num_steps)
    """
    if not still_improving(best_step, last_step):
        return None
    return (f"warning: the best validation NLL came at the last evaluation (step {last_step}): "
            "it was still falling when training stopped, so the model has probably not "
            "converged; the budget may be too short (raise num_steps)")


def run_warning(metrics: list[dict]) -> str | None:
    """The warning for one run's metrics records (``metrics.jsonl``), or None when the best
    validation NLL came before the last evaluation, or there was no evaluation.

    Args:
      metrics: the run's records; those with ``kind == "eval"`` carry ``step`` and ``val_nll``.

    Example:
      >>> evals = [{"kind": "eval", "step": s, "val_nll": v} for s, v in [(50, 2.0), (100, 1.5)]]
      >>> print(run_warning(evals))
      warning: the best validation NLL came at the last evaluation (step 100): it was still
      falling when training stopped, so the model has probably not converged; the budget may
      be too short (raise num_steps)
      >>> run_warning(evals + [{"kind": "eval", "step": 150, "val_nll": 1.6}]) is None
      True
    """
    evals = [m for m in metrics if m.get("kind") == "eval"]
    scored = [m for m in evals if _finite(m.get("val_nll"))]
    if not scored:
        return None
    best = min(scored, key=lambda m: (m["val_nll"], m["step"]))["step"]
    return budget_warning(best, max(m["step"] for m in evals))


def sweep_warning(rows: list[dict]) -> str | None:
    """The warning for a sweep's rows (one per member, with ``point``, ``is_best``,
    ``best_step`` and ``steps``), or None when every point's kept member stopped improving
    before its last step.

    Example:
      >>> rows = [{"point": p, "is_best": True, "best_step": b, "steps": 100}
      ...         for p, b in [("n_components=2", 100), ("n_components=3", 100)]]
      >>> print(sweep_warning(rows))
      warning: every point's best validation NLL came at its last step: it was still falling
      when training stopped, so those models have probably not converged; the budget may be
      too short (raise num_steps)
      >>> rows[0]["best_step"] = 60
      >>> print(sweep_warning(rows))
      warning: 1 of 2 points (n_components=3) had their best validation NLL at their last step:
      it was still falling when training stopped, so those models have probably not converged;
      the budget may be too short (raise num_steps)
    """
    kept = [r for r in rows if r.get("is_best")]
    late = [r["point"] for r in kept if still_improving(r.get("best_step"), r.get("steps"))]
    if not late:
        return None
    tail = ("still falling when training stopped, so those models have probably not "
            "converged; the budget may be too short (raise num_steps)")
    if len(late) == len(kept):
        return f"warning: every point's best validation NLL came at its last step: it was {tail}"
    shown = ", ".join(late[:5]) + (", ..." if len(late) > 5 else "")
    return (f"warning: {len(late)} of {len(kept)} points ({shown}) had their best validation "
            f"NLL at their last step: it was {tail}")
