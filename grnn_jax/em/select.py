"""Scores of fitted mixtures (log-likelihood, BIC, AIC) and choosing K."""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax.gmm import GMM, n_parameters
from grnn_jax.em import checks
from grnn_jax.em.blocks import block_columns, default_block_size, fit_standardiser, map_reduce
from grnn_jax.em.fit import FitResult, fit
from grnn_jax.em.log_joint import projection_log_joint


@functools.partial(jax.jit, static_argnames=("block_size",))
def log_likelihood_sum(g: GMM, x: jax.Array, weights: jax.Array | None = None, *, block_size: int | None = None):
    """``(sum_i w_i log p(x_i), sum_i w_i)`` in one blocked pass (pure, jitted, no checks).

    The densities are evaluated in standardised coordinates, so they stay
    accurate in float32 for data far from the origin.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones(1), "spherical")
      >>> ll, total = em.log_likelihood_sum(g, jnp.zeros((3, 1)))
      >>> round(float(ll), 4), float(total)
      (-2.7568, 3.0)
    """
    x = jnp.asarray(x)
    dtype = jnp.result_type(x.dtype, g.means.dtype)
    x = x.astype(dtype)
    ctype = g.covariance_type
    bs = block_size or default_block_size(g.n_features, g.n_components, ctype)
    std, total, _ = fit_standardiser(x, weights, bs, isotropic=ctype == "spherical")
    log_joint = projection_log_joint(std.gmm_to(jax.tree.map(lambda a: a.astype(dtype), g)))

    def fn(acc, xb, wb, start):
        ll = jax.nn.logsumexp(log_joint(block_columns(xb, wb, std)), axis=0)
        return acc + jnp.sum(jnp.where(wb > 0, ll * wb, 0.0)), None

    ll_sum, _ = map_reduce(fn, jnp.zeros((), dtype), x, weights, bs)
    return ll_sum - total * std.log_det.astype(dtype), total


def _checked(g: GMM, x, weights):
    xa = checks.check_x(x, batched_ok=False)
    checks.check_gmm(g, None, xa.shape[1], g.covariance_type, ((),))
    w = checks.check_weights(weights, xa)
    xj = jnp.asarray(xa)
    return xj, None if w is None else jnp.asarray(w, xj.dtype)


class Criteria(NamedTuple):
    """What :func:`criteria` returns (scalars; lower BIC and AIC are better).

    Attributes:
      score: mean (weighted) log-likelihood per row.
      bic: ``-2 sum_i w_i log p(x_i) + p log(sum_i w_i)``.
      aic: ``-2 sum_i w_i log p(x_i) + 2 p``.
      log_likelihood: ``sum_i w_i log p(x_i)``.
    """

    score: jax.Array
    bic: jax.Array
    aic: jax.Array
    log_likelihood: jax.Array


@jax.jit
def _criteria(g: GMM, x: jax.Array, weights: jax.Array | None) -> Criteria:
    # The arithmetic after the blocked pass is compiled with it: done eagerly, each of its
    # few operations was a tiny program of its own, compiled anew in every process.
    ll, total = log_likelihood_sum(g, x, weights)
    p = n_parameters(g.n_components, g.n_features, g.covariance_type)
    return Criteria(ll / total, -2.0 * ll + p * jnp.log(total), -2.0 * ll + 2.0 * p, ll)


def criteria(g: GMM, x, weights=None) -> Criteria:
    """The mean log-likelihood, BIC and AIC of ``g`` on ``x`` from one checked pass over the
    data and one compiled program (:func:`score`, :func:`bic` and :func:`aic` each return
    one of them).

    Args:
      g: mixture (no batch dimensions).
      x: (N, D) observations.
      weights: optional (N,) non-negative row weights; integer weights act as repeated rows.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "diag")
      >>> c = em.criteria(g, jnp.zeros((4, 1)))
      >>> round(float(c.score), 4), round(float(c.bic), 2), round(float(c.aic), 2)
      (-0.9189, 10.12, 11.35)
    """
    return _criteria(g, *_checked(g, x, weights))


def score(g: GMM, x, weights=None) -> jax.Array:
    """Mean (weighted) log-likelihood per row, as scikit-learn's ``score``.

    Args:
      g: mixture (no batch dimensions).
      x: (N, D) observations.
      weights: optional (N,) non-negative row weights.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)), "full")
      >>> round(float(em.score(g, jnp.zeros((4, 1)))), 4)
      -0.9189
    """
    return criteria(g, x, weights).score


def bic(g: GMM, x, weights=None) -> jax.Array:
    """Bayesian information criterion, as scikit-learn's (lower is better).

    ``-2 sum_i w_i log p(x_i) + p log(sum_i w_i)`` with ``p`` free parameters;
    integer weights act as repeated rows.

    Args:
      g: mixture (no batch dimensions).
      x: (N, D) observations.
      weights: optional (N,) non-negative row weights.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "diag")
      >>> round(float(em.bic(g, jnp.zeros((4, 1)))), 2)  # 2 * 4 * 0.919 + 2 * log(4)
      10.12
    """
    return criteria(g, x, weights).bic


def aic(g: GMM, x, weights=None) -> jax.Array:
    """Akaike information criterion, as scikit-learn's: ``-2 sum_i w_i log p(x_i) + 2 p``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "diag")
      >>> round(float(em.aic(g, jnp.zeros((4, 1)))), 2)
      11.35
    """
    return criteria(g, x, weights).aic


class Selection(NamedTuple):
    """The table :func:`select_n_components` returns.

    Attributes:
      candidates: the numbers of components tried, in the order given.
      scores: (len(candidates),) criterion values (lower is better).
      fits: the :class:`FitResult` of each candidate.
    """

    candidates: tuple
    scores: np.ndarray
    fits: tuple


class SelectionResult(NamedTuple):
    """What :func:`select_n_components` returns: the chosen K and the table behind the choice.

    A tuple, so ``k, table = em.select_n_components(...)`` unpacks it.

    Attributes:
      n_components: the candidate K with the lowest criterion.
      selection: the :class:`Selection` table (every candidate, its score and its fit).
    """

    n_components: int
    selection: Selection

    @property
    def fit(self) -> FitResult:
        """The :class:`FitResult` of the chosen K."""
        sel = self.selection
        return sel.fits[sel.candidates.index(self.n_components)]

    @property
    def gmm(self) -> GMM:
        """The fitted mixture with the chosen K."""
        return self.fit.gmm


_CRITERIA = {"bic": bic, "aic": aic}


def select_n_components(
    x, candidates: Sequence[int], *, key: jax.Array, criterion: str = "bic", **fit_kwargs
) -> SelectionResult:
    """Fits one mixture per candidate K and returns the K with the lowest criterion.

    Args:
      x: (N, D) observations.
      candidates: numbers of components to try.
      key: PRNG key (folded with each K).
      criterion: "bic" or "aic".
      **fit_kwargs: passed to :func:`fit` (``covariance_type``, ``n_init``, ``weights``, ...).

    Returns:
      A :class:`SelectionResult`: ``.n_components`` (the chosen K), ``.selection`` (the
      :class:`Selection` table of every candidate), and for convenience ``.fit`` and
      ``.gmm`` (the chosen K's fit and mixture). It is the tuple
      ``(n_components, selection)``, so ``k, table = select_n_components(...)`` works too.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import em
      >>> x = jnp.concatenate([jax.random.normal(jax.random.key(1), (150, 1)) - 6,
      ...                      jax.random.normal(jax.random.key(2), (150, 1)) + 6])
      >>> best = em.select_n_components(x, [1, 2], key=jax.random.key(0), covariance_type="spherical")
      >>> best.n_components, best.gmm.n_components, best.selection.scores[1] < best.selection.scores[0]
      (2, 2, np.True_)
      >>> k, table = best  # a tuple too
      >>> k, table.candidates
      (2, (1, 2))
    """
    if criterion not in _CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {tuple(_CRITERIA)}")
    cands = tuple(candidates)
    if not cands:
        raise ValueError("candidates is empty")
    cands = tuple(checks.check_int(k, "every candidate") for k in cands)
    checks.check_x(x, batched_ok=False)
    key = checks.check_key(key)
    weights = fit_kwargs.get("weights")
    fits, scores = [], []
    for k in cands:
        res: FitResult = fit(x, k, key=jax.random.fold_in(key, k), **fit_kwargs)
        fits.append(res)
        scores.append(float(_CRITERIA[criterion](res.gmm, x, weights)))
    scores = np.asarray(scores)
    return SelectionResult(cands[int(np.argmin(scores))], Selection(cands, scores, tuple(fits)))
