"""One per-feature standardisation, ``z = (x - center) / scale``, for EM and for sequence models.

EM fits in standardised coordinates so that float32 keeps its digits for data far
from the origin (the map is fitted on device, in blocks, by
:func:`grnn_jax.em.blocks.fit_standardiser`); the GRNN trains on sequences
standardised by the training split (:meth:`Standardiser.fit`). Both use this
class: it maps data and mixtures both ways and carries the log-Jacobian.

A density in standardised units gives one in original units by the change of
variables ``p_x(x) = p_z(z) / prod(scale)``, so per observed step

    log p_x(x_t | x_<t) = log p_z(z_t | z_<t) - log_det,     log_det = sum(log scale),

i.e. ``nll_original = nll_standardised + log_det``.

The arithmetic works on NumPy arrays on the host (float64 kept) and on JAX
arrays, also under ``jit``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax.gmm import GMM


def _xp(a):
    return jnp if isinstance(a, jax.Array) else np


class Standardiser(NamedTuple):
    """Affine map ``z = (x - center) / scale`` per feature.

    Attributes:
      center: (D,) subtracted from every row (the fitting data's mean).
      scale: (D,) positive divisors (the standard deviations; equal entries for
        a spherical mixture, whose isotropy a per-feature scale would break).

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> from grnn_jax.gmm.standardise import Standardiser
      >>> s = Sequences(np.array([[[1.0], [3.0]]]))
      >>> st = Standardiser.fit(s)
      >>> st.center.tolist(), st.scale.tolist(), st.transform(s).x[0, :, 0].tolist()
      ([2.0], [1.0], [-1.0, 1.0])
      >>> float(Standardiser(np.zeros(2), np.array([2.0, 4.0])).log_det) == float(np.log(8.0))
      True
    """

    center: np.ndarray | jax.Array
    scale: np.ndarray | jax.Array

    @classmethod
    def fit(cls, seqs) -> "Standardiser":
        """Mean and population std (ddof 0) over the observed steps of ``seqs`` (a ``Sequences``).

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
        return int(np.shape(self.center)[0])

    @property
    def log_det(self):
        """``sum(log scale)``: add it to a per-step NLL in standardised units to get original units."""
        xp = _xp(self.scale)
        return xp.sum(xp.log(self.scale))

    def _check(self, d: int) -> None:
        if d != self.n_features:
            raise ValueError(f"data have {d} features; the standardiser was fitted on {self.n_features}")

    def apply(self, x):
        """Standardises an array (..., D)."""
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        self._check(x.shape[-1])
        return (x - self.center) / self.scale

    def inverse(self, z):
        """Maps standardised values (..., D), e.g. samples, back to original units."""
        z = z if isinstance(z, jax.Array) else np.asarray(z)
        self._check(z.shape[-1])
        return z * self.scale + self.center

    def transform(self, seqs):
        """Standardises a ``Sequences``' ``x`` (covariates are left as they are); padded steps become 0."""
        self._check(seqs.n_features)
        z = np.where(seqs.mask[..., None], self.apply(seqs.x), 0.0)
        return seqs.with_x(z)

    def gmm_to(self, g: GMM) -> GMM:
        """A mixture in original coordinates, expressed in standardised ones."""
        return _rescale(g, self.center, self.scale, forward=True)

    def gmm_from(self, g: GMM) -> GMM:
        """A mixture in standardised coordinates, expressed in original ones.

        A spherical mixture needs equal scales (it stays spherical); convert it
        to full covariance first otherwise.
        """
        return _rescale(g, self.center, self.scale, forward=False)

    def to_dict(self) -> dict:
        """JSON-ready form (``mean`` and ``std`` per feature)."""
        return {"mean": np.asarray(self.center, float).tolist(), "std": np.asarray(self.scale, float).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardiser":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def _rescale(g: GMM, center, scale, *, forward: bool) -> GMM:
    ctype = g.covariance_type
    dtype = g.means.dtype
    center = jnp.asarray(center, dtype)
    scale = jnp.asarray(scale, dtype)
    # precision' = S precision S, so the upper-triangular factor's rows scale by s.
    row = scale if forward else 1.0 / scale
    if ctype in ("full", "tied"):
        prec_chol = g.prec_chol * row[:, None]
    elif ctype == "diag":
        prec_chol = g.prec_chol * row
    else:
        prec_chol = g.prec_chol * row[0]
    means = (g.means - center) / scale if forward else g.means * scale + center
    return GMM(g.logits, means, prec_chol, ctype)
