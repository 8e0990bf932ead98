"""The exact regime filter of a hidden Markov model: forward algorithm, smoothing, Markov M-step.

Every function works on ONE sequence in log space (``vmap`` it over sequences) and runs under
``jit``, ``vmap`` and ``grad``; results take the floating dtype of the inputs (float32 by
default, float64 under ``jax.enable_x64``). The emission model is the caller's: ``log_emit[t, k]
= log p(x_t | z_t = k, x_<t)`` may come from Gaussians, linear autoregressions or a network.

Transitions are row-normalised log matrices, either one ``(K, K)`` for every step or one per
step ``(T, K, K)``, where ``log_trans[t, j, k] = log p(z_t = k | z_{t-1} = j)`` moves the
filter from step ``t - 1`` to step ``t``; ``log_trans[0]`` is unused (``log_init`` takes its
place), so its gradient is zero. Nothing here renormalises them.

A ``mask (T,)`` marks valid steps. A padded step (mask 0) leaves the filter unchanged, adds 0
to the log-likelihood and has zero smoothed posterior, whatever ``log_emit`` holds there; the
first valid step draws its regime from ``log_init``; the transition into a valid step ``t`` is
``log_trans[t]``, from the last valid step before it.

Smoothing comes two ways: :func:`smoothed_posteriors` differentiates the log-likelihood
(Fisher's identity, no hand-written backward pass) and :func:`forward_backward` runs the scaled
backward recursion; each is the other's check. :func:`m_step_markov` turns expected counts
into new initial and transition log-probabilities, :func:`viterbi` finds the best path.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from grnn_jax.em import hmm
  >>> log_init = jnp.log(jnp.array([0.5, 0.5]))
  >>> log_trans = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.8]]))
  >>> log_emit = jax.random.normal(jax.random.key(0), (6, 2))
  >>> post = hmm.smoothed_posteriors(log_init, log_trans, log_emit)
  >>> new_init, new_trans = hmm.m_step_markov(post.expected_initial, post.expected_transitions)
  >>> after = hmm.forward(new_init, new_trans, log_emit).log_likelihood
  >>> bool(after >= post.log_likelihood)  # an EM step never lowers the likelihood
  True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class Filtered(NamedTuple):
    """What :func:`forward` returns.

    Attributes:
      log_likelihood: () ``log p(x_1:T)``, the sum of ``step_log_likelihood``.
      log_filtered: (T, K) ``log p(z_t | x_<=t)``.
      log_predicted: (T, K) ``log p(z_t | x_<t)``: the mixture log-weights of step ``t``,
        ``logsumexp_j(log_filtered[t-1, j] + log_trans[t, j, :])``, and ``log_init`` at the
        first valid step. At a padded step both fields repeat the last filtered distribution
        (``log_init`` before the first valid step).
      step_log_likelihood: (T,) ``log c_t = log p(x_t | x_<t)``; 0 at padded steps.
    """

    log_likelihood: jax.Array
    log_filtered: jax.Array
    log_predicted: jax.Array
    step_log_likelihood: jax.Array


class Smoothed(NamedTuple):
    """What :func:`smoothed_posteriors` and :func:`forward_backward` return (probabilities).

    Attributes:
      log_likelihood: () ``log p(x_1:T)``.
      smoothed: (T, K) ``p(z_t = k | x_1:T)``; rows of valid steps sum to one, padded rows are 0.
      expected_initial: (K,) ``p(z = k | x_1:T)`` at the first valid step.
      expected_transitions: the shape of ``log_trans``: with ``(K, K)`` transitions, the expected
        counts ``sum_t p(z_{t-1} = j, z_t = k | x_1:T)``; with ``(T, K, K)`` ones, the two-slice
        posterior of each step (zero at ``t = 0``, at padded steps and at the first valid step),
        whose sum over ``t`` is the counts.
    """

    log_likelihood: jax.Array
    smoothed: jax.Array
    expected_initial: jax.Array
    expected_transitions: jax.Array


def _safe_logsumexp(a: jax.Array, axis: int) -> jax.Array:
    """``logsumexp`` that gives ``-inf`` with a zero (not NaN) gradient where every entry is ``-inf``."""
    peak = lax.stop_gradient(jnp.max(a, axis=axis, keepdims=True))
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    total = jnp.sum(jnp.exp(a - peak), axis=axis)
    empty = total == 0
    return jnp.where(empty, -jnp.inf, jnp.log(jnp.where(empty, 1.0, total)) + jnp.squeeze(peak, axis))


def _prepare(log_init, log_trans, log_emit, mask):
    """Checks shapes (one-line ValueError) and returns the arrays, per-step transitions and step flags."""
    log_init, log_trans, log_emit = (jnp.asarray(a) for a in (log_init, log_trans, log_emit))
    if log_emit.ndim != 2 or 0 in log_emit.shape:
        raise ValueError(f"log_emit must have shape (T, K) with T, K >= 1; got {log_emit.shape}")
    t_len, k = log_emit.shape
    if log_init.shape != (k,):
        raise ValueError(f"log_init must have shape ({k},) to match log_emit {log_emit.shape}; got {log_init.shape}")
    if log_trans.shape not in ((k, k), (t_len, k, k)):
        raise ValueError(f"log_trans must have shape ({k}, {k}) or ({t_len}, {k}, {k}); got {log_trans.shape}")
    if mask is None:
        mask = jnp.ones(t_len, bool)
    mask = jnp.asarray(mask)
    if mask.shape != (t_len,):
        raise ValueError(f"mask must have shape ({t_len},) to match log_emit {log_emit.shape}; got {mask.shape}")
    dtype = jnp.result_type(log_init, log_trans, log_emit, float)
    log_init, log_trans, log_emit = (a.astype(dtype) for a in (log_init, log_trans, log_emit))
    valid = mask != 0
    # Whether a valid step came before t: only then does a transition lead into step t.
    has_prev = (jnp.cumsum(valid) - valid) > 0
    per_step = jnp.broadcast_to(log_trans, (t_len, k, k))
    return log_init, per_step, jnp.where(valid[:, None], log_emit, 0.0), valid, has_prev


def _forward_scan(log_init, per_step, log_emit, valid, has_prev) -> Filtered:
    """The filter on prepared inputs (padded ``log_emit`` already zeroed)."""

    def step(prev, xs):
        lt, le, ok, linked = xs
        pred = jnp.where(linked, _safe_logsumexp(prev[:, None] + lt, axis=0), log_init)
        joint = pred + le
        log_c = _safe_logsumexp(joint, axis=0)
        # An observation impossible under every regime: log c = -inf, keep the prediction.
        hopeless = jnp.isneginf(log_c)
        post = jnp.where(hopeless, pred, joint - jnp.where(hopeless, 0.0, log_c))
        new = jnp.where(ok, post, prev)
        return new, (new, jnp.where(ok, pred, prev), jnp.where(ok, log_c, 0.0))

    _, (filt, pred, log_c) = lax.scan(step, log_init, (per_step, log_emit, valid, has_prev))
    return Filtered(jnp.sum(log_c), filt, pred, log_c)


@jax.jit
def forward(log_init, log_trans, log_emit, mask=None) -> Filtered:
    """The forward algorithm (Hamilton filter) for one sequence, in log space.

    Args:
      log_init: (K,) initial log-probabilities ``log p(z_1 = k)``.
      log_trans: (K, K) or (T, K, K) row-normalised log transition matrices; ``log_trans[t, j, k]
        = log p(z_t = k | z_{t-1} = j)``, ``log_trans[0]`` unused.
      log_emit: (T, K) ``log p(x_t | z_t = k, x_<t)``; ignored at padded steps.
      mask: (T,) optional, nonzero at valid steps.

    Returns:
      :class:`Filtered`: the log-likelihood, filtered and predicted log-posteriors, ``log c_t``.

    Raises:
      ValueError: shapes that do not fit together.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import hmm
      >>> f = hmm.forward(jnp.log(jnp.array([0.5, 0.5])), jnp.zeros((2, 2)) - jnp.log(2.0),
      ...                 jnp.log(jnp.array([[0.2, 0.6], [0.1, 0.3]])))
      >>> # log(0.4 * 0.2): c_1 = 0.5 * 0.2 + 0.5 * 0.6, and c_2 = 0.5 * 0.1 + 0.5 * 0.3.
      >>> print(round(float(f.log_likelihood), 4), jnp.exp(f.log_filtered[0]).round(2).tolist())
      -2.5257 [0.25, 0.75]
    """
    return _forward_scan(*_prepare(log_init, log_trans, log_emit, mask))


@jax.jit
def smoothed_posteriors(log_init, log_trans, log_emit, mask=None) -> Smoothed:
    """Smoothed posteriors and expected transitions as gradients of the log-likelihood.

    Fisher's identity: ``log p(x_1:T)`` is a log-sum over paths of ``log_init[z_1] + sum_t
    (log_trans[t, z_{t-1}, z_t] + log_emit[t, z_t])``, so its gradient w.r.t. ``log_emit[t, k]``
    is ``p(z_t = k | x_1:T)``, w.r.t. ``log_init`` the posterior of the first regime, and w.r.t.
    ``log_trans[t, j, k]`` the two-slice posterior ``p(z_{t-1} = j, z_t = k | x_1:T)``. With one
    constant ``(K, K)`` matrix its entries appear once per transition, so the gradient sums over
    steps: the expected transition counts, the M-step's statistics. The forward pass does not
    renormalise the matrices, so the gradient is taken at fixed, not softmax-ed, entries.

    Args:
      log_init, log_trans, log_emit, mask: as in :func:`forward`.

    Returns:
      :class:`Smoothed`; defined where the log-likelihood is finite.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import hmm
      >>> s = hmm.smoothed_posteriors(jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.eye(2) * 0.8 + 0.1),
      ...                             jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])))
      >>> s.smoothed.sum(1).round(5).tolist(), float(s.expected_transitions.sum().round(5))
      ([1.0, 1.0, 1.0], 2.0)
    """
    _prepare(log_init, log_trans, log_emit, mask)  # the checks, before any compute

    def log_likelihood(li, lt, le):
        return forward(li, lt, le, mask).log_likelihood

    value, grads = jax.value_and_grad(log_likelihood, argnums=(0, 1, 2))(
        *(jnp.asarray(a) for a in (log_init, log_trans, log_emit))
    )
    g_init, g_trans, g_emit = grads
    return Smoothed(value, g_emit, g_init, g_trans)


def _backward_scan(per_step, log_emit, valid, has_prev, log_c) -> jax.Array:
    """(T, K) scaled log backward messages ``log beta_t`` (``p(x_>t | z_t) / prod_{s>t} c_s``)."""

    def step(beta, xs):
        lt, le, ok, linked, lc = xs
        lc = jnp.where(jnp.isfinite(lc), lc, 0.0)
        back = _safe_logsumexp(lt + (le + beta)[None, :], axis=1) - lc
        prev = jnp.where(ok, jnp.where(linked, back, jnp.zeros_like(beta)), beta)
        return prev, beta

    beta_end = jnp.zeros(log_emit.shape[1], log_emit.dtype)
    _, betas = lax.scan(step, beta_end, (per_step, log_emit, valid, has_prev, log_c), reverse=True)
    return betas


@jax.jit
def forward_backward(log_init, log_trans, log_emit, mask=None) -> Smoothed:
    """Smoothed posteriors and expected transitions by the scaled forward-backward recursion.

    ``log beta_{t-1}[j] = logsumexp_k(log_trans[t, j, k] + log_emit[t, k] + log beta_t[k]) - log
    c_t`` from ``log beta_T = 0``; ``p(z_t | x) = alpha_t beta_t`` and ``p(z_{t-1} = j, z_t = k |
    x) = alpha_{t-1}[j] P_t[j, k] p(x_t | k) beta_t[k] / c_t``. Same results as
    :func:`smoothed_posteriors`, without autodiff.

    Args:
      log_init, log_trans, log_emit, mask: as in :func:`forward`.

    Returns:
      :class:`Smoothed`; defined where the log-likelihood is finite.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax.em import hmm
      >>> args = (jnp.log(jnp.array([0.3, 0.7])), jnp.log(jnp.array([[0.9, 0.1], [0.4, 0.6]])),
      ...         jax.random.normal(jax.random.key(0), (5, 2)))
      >>> a, b = hmm.forward_backward(*args), hmm.smoothed_posteriors(*args)
      >>> bool(jnp.allclose(a.smoothed, b.smoothed, atol=1e-5))
      True
    """
    log_init, per_step, log_emit_z, valid, has_prev = _prepare(log_init, log_trans, log_emit, mask)
    filt = _forward_scan(log_init, per_step, log_emit_z, valid, has_prev)
    log_beta = _backward_scan(per_step, log_emit_z, valid, has_prev, filt.step_log_likelihood)
    smoothed = jnp.where(valid[:, None], jnp.exp(filt.log_filtered + log_beta), 0.0)
    # The filter entering step t: the last valid step's (log_init before any).
    prev = jnp.concatenate([log_init[None], filt.log_filtered[:-1]])
    log_xi = (prev[:, :, None] + per_step + (log_emit_z + log_beta)[:, None, :]
              - filt.step_log_likelihood[:, None, None])
    xi = jnp.where((valid & has_prev)[:, None, None], jnp.exp(log_xi), 0.0)
    first = valid & ~has_prev
    initial = jnp.sum(jnp.where(first[:, None], smoothed, 0.0), axis=0)
    transitions = xi if jnp.ndim(log_trans) == 3 else jnp.sum(xi, axis=0)
    return Smoothed(filt.log_likelihood, smoothed, initial, transitions)


def m_step_markov(expected_initial, expected_counts, prior_concentration=None):
    """Closed-form M-step of the Markov chain: initial and transition log-probabilities.

    Maximum likelihood normalises the counts; a Dirichlet prior of concentration ``c`` (as
    dynamax's default ``1.1`` on both) gives its mode, counts plus ``c - 1`` normalised. A row
    with no mass at all becomes uniform. Zero counts under maximum likelihood give ``-inf``
    log-probabilities: structural zeros that :func:`forward` accepts.

    Args:
      expected_initial: (K,) expected first regimes, summed over sequences.
      expected_counts: (K, K) expected transition counts ``j -> k``, summed over sequences.
      prior_concentration: None (maximum likelihood), or a concentration >= 1 (scalar, or
        broadcasting against ``(K,)`` and ``(K, K)``).

    Returns:
      ``(log_init (K,), log_trans (K, K))``.

    Raises:
      ValueError: shapes that do not fit, or a concentration below 1.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import hmm
      >>> li, lt = hmm.m_step_markov(jnp.array([2.0, 0.0]), jnp.array([[3.0, 1.0], [0.0, 0.0]]))
      >>> jnp.exp(li).tolist(), jnp.exp(lt).tolist()
      ([1.0, 0.0], [[0.75, 0.25], [0.5, 0.5]])
    """
    init, counts = jnp.asarray(expected_initial), jnp.asarray(expected_counts)
    k = init.shape[0] if init.ndim == 1 else -1
    if init.ndim != 1 or counts.shape != (k, k):
        raise ValueError(
            f"expected_initial must be (K,) and expected_counts (K, K); got {init.shape} and {counts.shape}"
        )
    if prior_concentration is not None:
        if _below_one(prior_concentration):
            raise ValueError(f"prior_concentration must be >= 1 (a Dirichlet mode); got {prior_concentration!r}")
        init = init + (jnp.asarray(prior_concentration) - 1)
        counts = counts + (jnp.asarray(prior_concentration) - 1)
    return _log_normalise(init), _log_normalise(counts)


def _below_one(concentration) -> bool:
    """Whether a concrete concentration has an entry below 1 (a traced one cannot be checked)."""
    try:
        return bool(np.any(np.asarray(concentration) < 1))
    except jax.errors.TracerArrayConversionError:
        return False


def _log_normalise(counts: jax.Array) -> jax.Array:
    """Log of rows of nonnegative counts divided by their sums; a row summing to 0 becomes uniform."""
    counts = jnp.maximum(counts, 0.0)
    total = jnp.sum(counts, axis=-1, keepdims=True)
    empty = total == 0
    counts = jnp.where(empty, 1.0, counts)
    total = jnp.where(empty, counts.shape[-1], total)
    return jnp.log(counts) - jnp.log(total)


@jax.jit
def viterbi(log_init, log_trans, log_emit, mask=None):
    """The most probable regime path (max-product in log space, then backtracking).

    Args:
      log_init, log_trans, log_emit, mask: as in :func:`forward`.

    Returns:
      ``(path (T,) int32, log_prob ())``: the path and ``log p(z_1:T, x_1:T)`` along it. Padded
      steps repeat the regime of the nearest valid step before them (after them, for leading ones).

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import hmm
      >>> path, _ = hmm.viterbi(jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.eye(2) * 0.8 + 0.1),
      ...                       jnp.log(jnp.array([[0.9, 0.1], [0.4, 0.6], [0.9, 0.1]])))
      >>> path.tolist()
      [0, 0, 0]
    """
    log_init, per_step, log_emit, valid, has_prev = _prepare(log_init, log_trans, log_emit, mask)
    k = log_emit.shape[1]
    stay = jnp.arange(k, dtype=jnp.int32)

    def step(delta, xs):
        lt, le, ok, linked = xs
        scores = delta[:, None] + lt
        best = jnp.where(linked, jnp.max(scores, axis=0), log_init) + le
        back = jnp.where(linked, jnp.argmax(scores, axis=0).astype(jnp.int32), stay)
        return jnp.where(ok, best, delta), jnp.where(ok, back, stay)

    delta, pointers = lax.scan(step, log_init, (per_step, log_emit, valid, has_prev))
    last = jnp.argmax(delta).astype(jnp.int32)

    def trace(state, ptr):
        return ptr[state], state

    _, path = lax.scan(trace, last, pointers, reverse=True)
    return path, jnp.max(delta)
