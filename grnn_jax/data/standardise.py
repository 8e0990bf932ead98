"""Per-feature standardisation fitted on the training split, and its log-Jacobian.

A model trained on ``z = (x - mean) / std`` has densities in standardised units. Since
``p_x(x) = p_z(z) / prod(std)``, every log-density in the data's original units is

    log p_x(x_t | x_<t) = log p_z(z_t | z_<t) - sum(log std)      per observed step,

so ``nll_original = nll_standardised + log_jacobian`` with ``log_jacobian = sum(log std)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from grnn_jax.data.sequences import Sequences


class Standardiser(NamedTuple):
    """Affine map ``z = (x - mean) / std`` per feature.

    Attributes:
      mean: (D,) per-feature means over the observed steps of the fitting split.
      std: (D,) per-feature standard deviations (population, ddof=0), all > 0.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences, Standardiser
      >>> s = Sequences(np.array([[[1.0], [3.0]]]))
      >>> st = Standardiser.fit(s)
      >>> st.mean.tolist(), st.std.tolist(), st.transform(s).x[0, :, 0].tolist()
      ([2.0], [1.0], [-1.0, 1.0])
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, seqs: Sequences) -> "Standardiser":
        """Fits mean and std over the observed steps of ``seqs``.

        Raises:
          ValueError: a feature is constant over the observed steps.
        """
        obs = seqs.observed()
        mean = obs.mean(axis=0)
        std = obs.std(axis=0)
        tiny = np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
        bad = ~(std > tiny)
        if bad.any():
            raise ValueError(
                f"feature {int(np.argmax(bad))} is constant over the training steps; cannot standardise"
            )
        return cls(mean, std)

    @classmethod
    def identity(cls, n_features: int) -> "Standardiser":
        """The map that changes nothing (log-Jacobian 0)."""
        return cls(np.zeros(n_features), np.ones(n_features))

    @property
    def n_features(self) -> int:
        return int(np.shape(self.mean)[0])

    @property
    def log_jacobian(self) -> float:
        """``sum(log std)``: add it to a per-step NLL in standardised units to get original units."""
        return float(np.sum(np.log(self.std)))

    def _check(self, d: int) -> None:
        if d != self.n_features:
            raise ValueError(f"data have {d} features; the standardiser was fitted on {self.n_features}")

    def transform(self, seqs: Sequences) -> Sequences:
        """Standardises ``x`` (covariates are left as they are); padded steps become 0."""
        self._check(seqs.n_features)
        z = (seqs.x - self.mean) / self.std
        z = np.where(seqs.mask[..., None], z, 0.0)
        return seqs.with_x(z)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardises an array (..., D)."""
        x = np.asarray(x)
        self._check(x.shape[-1])
        return (x - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Maps standardised values (..., D), e.g. samples, back to original units."""
        z = np.asarray(z)
        self._check(z.shape[-1])
        return z * self.std + self.mean

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"mean": np.asarray(self.mean, float).tolist(), "std": np.asarray(self.std, float).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardiser":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


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
