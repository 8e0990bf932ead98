"""How smooth a set of sequences is: the one-step move relative to the spread."""

from __future__ import annotations

import numpy as np

from grnn_jax.data.sequences import Sequences


def step_change_ratio(seqs: Sequences) -> float:
    """How far the series move in one step relative to their spread: the mean over features
    of ``std(x_t - x_{t-1}) / std(x)`` over consecutive observed steps.

    Near 0 for smooth series (each step nearly repeats the last); about ``sqrt(2)`` for
    independent steps. NaN when no sequence has two observed steps; features that are
    constant are left out.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> t = np.arange(200.0)
      >>> smooth = Sequences(np.sin(t / 20)[None, :, None])
      >>> noisy = Sequences(np.random.default_rng(0).normal(size=(1, 200, 1)))
      >>> round(step_change_ratio(smooth), 2), round(step_change_ratio(noisy), 1)
      (0.05, 1.4)
    """
    obs = seqs.observed()
    std = obs.std(axis=0)
    both = seqs.mask[:, 1:] & seqs.mask[:, :-1]
    if not both.any():
        return float("nan")
    steps = (seqs.x[:, 1:] - seqs.x[:, :-1])[both]
    keep = std > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(steps.std(axis=0)[keep] / std[keep]))


def linear_predictability(seqs: Sequences) -> float:
    """How much of the next step a linear function of the last one predicts: the Gaussian
    log-likelihood gain, in nats per step, of the least-squares VAR(1) one-step predictor
    ``x_t ~ N(A x_{t-1} + b, Sigma_e)`` over an i.i.d. Gaussian ``x_t ~ N(mu, Sigma_x)``,
    ``0.5 * (log det Sigma_x - log det Sigma_e)`` over pairs of consecutive observed steps,
    less ``D**2 / (2 n)`` (n pairs, D features), the gain's expectation when the steps are
    independent (``2 n`` times the gain is then chi-squared with the ``D**2`` degrees of
    freedom of ``A``), so that it is near 0 for unpredictable series whatever their size.

    Invariant to affine changes of each feature's units. For a stationary Gaussian AR(1),
    ``x_t = phi x_{t-1} + e_t``, it tends to ``-0.5 * log(1 - phi**2)``; for daily log-returns
    it is near 0, for smooth series several nats. NaN when there are no more pairs than
    ``D + 1``; constant features are left out.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> rng = np.random.default_rng(0)
      >>> iid = Sequences(rng.normal(size=(20, 100, 2)))
      >>> x = np.zeros((50, 400, 1))
      >>> x[:, 0] = rng.normal(size=(50, 1)) / np.sqrt(1 - 0.8**2)  # stationary start
      >>> for t in range(1, 400):
      ...     x[:, t] = 0.8 * x[:, t - 1] + rng.normal(size=(50, 1))
      >>> abs(linear_predictability(iid)) < 0.01
      True
      >>> print(f"{linear_predictability(Sequences(x)):.2f} {-0.5 * np.log(1 - 0.8**2):.2f}")
      0.51 0.51
    """
    both = seqs.mask[:, 1:] & seqs.mask[:, :-1]
    keep = seqs.observed().std(axis=0) > 0
    prev = np.asarray(seqs.x[:, :-1][both][:, keep], np.float64)
    cur = np.asarray(seqs.x[:, 1:][both][:, keep], np.float64)
    n, d = cur.shape
    if n <= d + 1 or d == 0:
        return float("nan")
    # Standardised by the pairs' own spread, so that the small ridge below (which keeps
    # collinear features finite) means the same in any units.
    loc, scale = cur.mean(axis=0), cur.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    prev, cur = (prev - loc) / scale, (cur - loc) / scale
    design = np.hstack([prev, np.ones((n, 1))])
    coef, *_ = np.linalg.lstsq(design, cur, rcond=None)
    resid = cur - design @ coef
    ridge = 1e-9 * np.eye(d)
    logdet_x = np.linalg.slogdet(np.cov(cur.T, bias=True).reshape(d, d) + ridge)[1]
    logdet_e = np.linalg.slogdet(resid.T @ resid / n + ridge)[1]
    return float(0.5 * (logdet_x - logdet_e) - d * d / (2 * n))
