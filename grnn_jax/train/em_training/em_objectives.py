r"""EM training objectives for the mixture head: generalised EM (``gem``) and
natural-gradient EM (``ngem``, Chen, Bayrooti & Morad, "Learning Mixture Density via
Natural Gradient Expectation Maximization", ICML 2026, arXiv 2602.10602).

Both read the network as a latent-variable model: at an observed step with head outputs
θ (logits ``a``, means ``μ_k``, raw scales ``r_k``; see :mod:`grnn_jax.model.heads`) and
observation ``x``, the latent ``z ∈ {1..K}`` picks the component and
``log p(x, z=k | θ) = log π_k + log N(x | μ_k, P_k)``, ``π = softmax(a)``, ``P_k`` the
upper-triangular precision-Cholesky factor (``Λ_k = P_k P_kᵀ``).

**E-step.** ``γ_k = p(z=k | x, θ)`` from the current outputs
(:func:`grnn_jax.gmm.log_responsibilities`), held constant (``stop_gradient``).

**gem.** The loss is the negative expected complete-data log-likelihood per observed step,
``−Q = −Σ_k γ_k [log π_k + log N(x | μ_k, P_k)]``. Since ``log p(x) = Q − Σ_k γ_k log γ_k``
and the entropy term is stationary in θ at the γ it was computed from, ``∇(−Q) = ∇ NLL``
at the current parameters (Fisher's identity): gem trains exactly as nll does; it is the
M-step of EM taken as one gradient step.

**ngem: the surrogate.** The complete-data Fisher of one step is block-diagonal (cross
terms vanish because ``E_x[∇ log N(x | η_z)] = 0`` and one z is active at a time): a
categorical block for the logits, ``F_a = diag(π) − ππᵀ``, and ``π_k F_N(η_k)`` for
component k, ``F_N`` the Fisher of one Gaussian observation. ngem moves the head's outputs
by a natural-gradient step of ``Q`` per block. With ``ñ`` that step for each output
block, computed from stop-gradient quantities, the surrogate
``L = −(1/n) Σ_steps Σ_blocks ⟨sg(ñ), θ_block⟩`` has ``∂L/∂θ_block = −ñ``, so
back-propagation carries the natural step into the network. The value reported as the
loss is the NLL (``nll + L − sg(L)``): same gradient, a readable number.

Per block, with ``e = x − μ_k``, ``y = P_kᵀ e`` (whitened residual, ``y ~ N(0, I)`` under
component k):

* **means.** ``∇_μ log N = Λ e``, ``F_N(μ) = Λ``: natural step ``e``.
* **precision-Cholesky factor, full.** ``∇_Σ log N = ½(Λ e eᵀ Λ − Λ)`` and the Fisher on Σ,
  ``F(A, B) = ½ tr(Λ A Λ B)``, give the natural step ``Σ̃ = e eᵀ − Σ``. The map from the
  D(D+1)/2 entries of ``P`` to Σ is a diffeomorphism, so the natural step in ``P`` is the
  tangent vector that maps to ``Σ̃``: ``dΛ = −Λ Σ̃ Λ``; ``dΛ = dP Pᵀ + P dPᵀ`` gives
  ``P⁻¹ dΛ P⁻ᵀ = M + Mᵀ`` with ``M = P⁻¹ dP`` upper triangular, and
  ``P⁻¹ dΛ P⁻ᵀ = −Pᵀ Σ̃ P = I − y yᵀ``, so ``dP = P Φ(I − y yᵀ)``, Φ keeping the strict
  upper triangle and half the diagonal. Exact, O(D³) per step and component, no Fisher is
  formed or inverted.
* **diag.** The same with diagonal P: ``dP_i = P_i (1 − y_i²) / 2``.
* **spherical.** One precision p: ``∂ log N / ∂p = (D − ‖y‖²)/p``, ``F = 2D/p²``:
  ``dp = p (1 − ‖y‖²/D) / 2``.
* **tied.** One factor P shared by the components: the complete-data Fisher on it is
  ``Σ_k π_k F_N = F_N`` and ``∇Q`` sums ``γ_k ∇ log N_k``, so the step is
  ``dP = P Φ(I − Σ_k γ_k y_k y_kᵀ)`` under either weighting below.
* **The head's raw outputs.** Off-diagonal entries of P are raw outputs; every diagonal
  entry is ``P_ii = g(r_i) = 1/(min_scale + softplus(r_i)) + 1/max_scale`` (the bounded
  diagonal). The Jacobian J from raw outputs to P is diagonal, so
  ``F_raw = J F_P J`` and ``F_raw⁻¹ ∇_raw = J⁻¹ F_P⁻¹ ∇_P``: the raw natural step is
  ``dP_ii / g'(r_i)`` on the diagonal, with
  ``g'(r) = −sigmoid(r) (P_ii − 1/max_scale)²`` read off P itself. The surrogate acts on P
  (the head's own output), so its cotangent on ``P_ii`` is ``dP_ii / g'(r_i)²``: after the
  head's chain rule the raw output receives exactly ``dP_ii / g'(r_i)``.
* **logits.** ``∇_a Q = γ − π``; the minimum-norm solution of ``F_a v = γ − π`` is
  ``v = γ/π − 1`` centred (``F_a`` is singular along ``a ↦ a + c·1``).

**Which Fisher, and why.** Two weightings are implemented:

* ``fisher="complete"`` — the exact complete-data Fisher above: component steps
  ``(γ_k/π_k) ñ_k``, logit step ``γ/π − 1``. Tested against an independent F⁻¹∇Q. As a
  training objective it fails on recurrent sequence models (measured, see the README):
  the logit step stays at −1 for every component a step does not use (where the gradient
  ``γ − π`` fades to 0), pushing unused logits down without bound, and ``γ_k/π_k`` blows
  component steps up exactly where the network deems a component unlikely.
* ``fisher="component"`` (the ``ngem`` objective, the paper's practical form) — each
  component is preconditioned by its own Gaussian Fisher ``F_N(η_k)`` (the complete-data
  block without the factor ``π_k``), and the logits keep the plain gradient ``γ − π``
  (the categorical block treated with the identity metric). Component steps become
  ``γ_k ñ_k``: the mean moves by ``γ_k (x − μ_k)``, the covariance toward
  ``γ_k (e eᵀ − Σ)`` — a responsibility-weighted, single-observation M-step — and are
  bounded by the data, not by ``1/π_k``. Tested against F⁻¹∇Q with that block Fisher.

Example:
  >>> import jax, numpy as np
  >>> from grnn_jax.data import Sequences, batch_at
  >>> from grnn_jax.train import ModelConfig, get_objective
  >>> net = ModelConfig(n_features=2, n_components=2, hidden_size=4).build()
  >>> b = batch_at(Sequences(np.random.default_rng(0).normal(size=(2, 3, 2))), 0,
  ...              batch_size=2, seed=0)
  >>> params = net.init(jax.random.key(0), b.x)
  >>> nll, _ = get_objective("nll").loss(net, params, {}, b)
  >>> ng, m = get_objective("ngem").loss(net, params, {}, b)
  >>> bool(abs(ng - nll) < 1e-5), int(m["n_obs"])
  (True, 6)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grnn_jax import gmm as gmm_lib
from grnn_jax import model as model_lib
from grnn_jax.data import Batch
from grnn_jax.train.em_training.em_state import EM_HEAD_KEY, hidden_gmm_penalty, model_variables

FISHER_WEIGHTINGS = ("component", "complete")


def _step_mixture(net, params, aux_state, batch: Batch, noise=None):
    """(per-step GMM (B, T), x (B, T, D), mask (B, T)); padding zeroed as
    ``model.step_log_probs`` does, so NaN there reaches neither value nor gradient. The EM
    head's components come from ``aux_state`` (constants to the gradient); ``noise`` is the
    step's training-time noise (``model.step_log_probs``)."""
    x, u = model_lib.check_inputs(net, batch.x, batch.u)
    mask = model_lib.mask_from_lengths(batch.lengths, x.shape[1])
    x = jnp.where(mask[..., None], x, 0)
    if u is not None:
        u = jnp.where(mask[..., None], u, 0)
    return net.apply(model_variables(params, aux_state), x, u, noise), x, mask


def _with_penalty(loss, metrics, net, params, aux_state, batch):
    """Adds the hidden-state GMM regulariser when the run has one (as ``nll`` does)."""
    penalty = hidden_gmm_penalty(net, params, aux_state, batch)
    if penalty is None:
        return loss, metrics
    return loss + penalty, dict(metrics, hidden_gmm_penalty=penalty)


def _em_head(aux_state) -> bool:
    return isinstance(aux_state, dict) and EM_HEAD_KEY in aux_state


def _masked_mean(v: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = jnp.sum(mask)
    return jnp.sum(jnp.where(mask, v, 0.0)) / jnp.maximum(n, 1).astype(v.dtype), n


def expected_complete_log_lik(g: gmm_lib.GMM, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``Q = Σ_k sg(γ_k) [log π_k + log N(x | k)]`` and ``log p(x)`` per step.

    Args:
      g: mixtures of batch shape ``S``.
      x: (*S, D) observations.

    Returns:
      (Q (*S,), log p(x) (*S,)); Q's gradient equals log p(x)'s at these parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.array([[0.0], [1.0]]), jnp.ones((2, 1)), "diag")
      >>> q, lp = expected_complete_log_lik(g, jnp.array([0.5]))
      >>> bool(q <= lp)
      True
    """
    joint = gmm_lib.joint_log_prob(g, x)
    gamma = jax.lax.stop_gradient(jnp.exp(gmm_lib.log_responsibilities(g, x)))
    return jnp.sum(gamma * joint, axis=-1), jax.nn.logsumexp(joint, axis=-1)


def natural_steps(
    g: gmm_lib.GMM, x: jax.Array, *, min_scale: float, max_scale: float,
    fisher: str = "component", damping: float = 0.0,
) -> gmm_lib.GMM:
    """The natural-gradient step of ``Q`` per output block, as cotangents on the GMM's
    fields (see the module doc): for ``logits`` and ``means`` the step itself; for
    ``prec_chol`` the cotangent that the head's bounded diagonal turns into the raw
    natural step. Everything is stop-gradient.

    Args:
      g: the head's mixtures, batch shape ``S``, type "full", "diag", "spherical" or "tied".
      x: (*S, D) observations.
      min_scale, max_scale: those of the head (its bounded precision diagonal).
      fisher: "component" (each Gaussian's own Fisher, plain logit gradient) or
        "complete" (the exact complete-data Fisher).
      damping: λ >= 0 added to the raw Fisher of every diagonal entry (0: exact). The
        raw step ``dP_ii / g'(r_i)`` becomes ``dP_ii g'(r_i) f / (g'(r_i)² f + λ)`` with
        ``f = 2 / P_ii²`` the Fisher of a precision-Cholesky diagonal entry: unchanged where
        the bounded map is steep, bounded where it saturates (``g' → 0`` near the head's
        scale bounds, where the exact raw step grows without limit).

    Returns:
      a GMM-shaped container of cotangents (same shapes as ``g``).

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "diag")
      >>> s = natural_steps(g, jnp.array([2.0]), min_scale=1e-3, max_scale=1e3)
      >>> float(s.means[0, 0])  # one component: γ = 1, the step is x − μ
      2.0
    """
    if fisher not in FISHER_WEIGHTINGS:
        raise ValueError(f"fisher must be one of {FISHER_WEIGHTINGS}; got {fisher!r}")
    g = jax.lax.stop_gradient(g)
    x = jax.lax.stop_gradient(x)
    log_pi = gmm_lib.log_weights(g)
    pi = jnp.exp(log_pi)
    gamma = jnp.exp(gmm_lib.log_responsibilities(g, x))  # (*S, K)
    if fisher == "complete":
        ratio = jnp.exp(gmm_lib.log_responsibilities(g, x) - log_pi)  # γ/π
        v = ratio - 1.0
        logit_step = v - jnp.mean(v, axis=-1, keepdims=True)
        weight = ratio
    else:
        logit_step = gamma - pi
        weight = gamma
    e = x[..., None, :] - g.means  # (*S, K, D)
    dp, diag = _precision_step(g, e, weight, gamma)
    prec_cot = _raw_cotangent(dp, diag, g.covariance_type, min_scale=min_scale,
                              max_scale=max_scale, damping=damping)
    return gmm_lib.GMM(logit_step, weight[..., None] * e, prec_cot, g.covariance_type)


def _precision_step(g: gmm_lib.GMM, e: jax.Array, weight: jax.Array,
                    gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The natural step ``dP`` of the precision-Cholesky factor per covariance type (see the
    module doc), and P's diagonal; ``e`` (*S, K, D) are the residuals, ``weight`` (*S, K)
    the components' step weights and ``gamma`` the responsibilities."""
    ctype, d, p = g.covariance_type, g.n_features, g.prec_chol
    if ctype == "full":
        y = jnp.einsum("...kd,...kde->...ke", e, p)
        eye = jnp.eye(d, dtype=e.dtype)
        s = eye - y[..., :, None] * y[..., None, :]
        phi = jnp.triu(s, 1) + 0.5 * eye * s
        return weight[..., None, None] * (p @ phi), jnp.diagonal(p, axis1=-2, axis2=-1)
    if ctype == "diag":
        y = e * p
        return weight[..., None] * p * (1.0 - y * y) / 2, p
    if ctype == "spherical":
        y2 = jnp.sum(e * e, axis=-1) * p * p
        return weight * p * (1.0 - y2 / d) / 2, p
    if ctype == "tied":
        # One factor for all components: the Fisher on Σ is F_N's (Σ_k π_k = 1) and ∇Q sums
        # γ_k ∇ log N_k, so the step is Σ_k γ_k ñ_k under either weighting.
        y = jnp.einsum("...kd,...de->...ke", e, p)
        eye = jnp.eye(d, dtype=e.dtype)
        s = eye - jnp.einsum("...k,...kd,...ke->...de", gamma, y, y)
        phi = jnp.triu(s, 1) + 0.5 * eye * s
        return p @ phi, jnp.diagonal(p, axis1=-2, axis2=-1)
    raise ValueError(f"natural steps need a head covariance type; got {ctype!r}")


def _raw_cotangent(dp: jax.Array, diag: jax.Array, ctype: str, *, min_scale: float,
                   max_scale: float, damping: float) -> jax.Array:
    """The cotangent on P that the head's bounded diagonal turns into the raw natural step:
    ``dP_ii / g'(r_i)²`` on the diagonal (damped: see :func:`natural_steps`), ``dP`` off it."""
    # g'(r) of the bounded diagonal, read off P: softplus(r) = 1/(P − 1/max) − min.
    excess = diag - 1.0 / max_scale
    sp = 1.0 / excess - min_scale
    dg = -(-jnp.expm1(-sp)) * excess * excess
    dp_diag = jnp.diagonal(dp, axis1=-2, axis2=-1) if ctype in ("full", "tied") else dp
    if damping > 0:
        f = 2.0 / (diag * diag)
        diag_cot = dp_diag * f / (dg * dg * f + damping)
    else:
        diag_cot = dp_diag / (dg * dg)
    if ctype not in ("full", "tied"):
        return diag_cot
    eye = jnp.eye(diag.shape[-1], dtype=dp.dtype)
    return jnp.triu(dp, 1) + eye * diag_cot[..., None, :]


def ngem_surrogate(
    g: gmm_lib.GMM, x: jax.Array, *, min_scale: float, max_scale: float,
    fisher: str = "component", damping: float = 0.0,
) -> jax.Array:
    """Per-step surrogate ``−Σ_blocks ⟨sg(ñ), θ_block⟩`` whose gradient through the head is
    minus the natural step of :func:`natural_steps`.

    Returns:
      (*S,) surrogate values (meaningless as numbers; only their gradient is used).
    """
    steps = natural_steps(g, x, min_scale=min_scale, max_scale=max_scale, fisher=fisher,
                          damping=damping)
    lead = tuple(range(-1, 0))
    total = jnp.sum(steps.logits * g.logits, axis=lead)
    total += jnp.sum(steps.means * g.means, axis=(-2, -1))
    prec_axes = {"full": (-3, -2, -1), "tied": (-2, -1), "diag": (-2, -1),
                 "spherical": (-1,)}[g.covariance_type]
    total += jnp.sum(steps.prec_chol * g.prec_chol, axis=prec_axes)
    return -total


def gem_loss(net, params, aux_state, batch: Batch, *, noise=None) -> tuple[jax.Array, dict]:
    """Negative expected complete-data log-likelihood per observed step (responsibilities
    held constant); its gradient is the NLL's. ``metrics["nll"]`` is the NLL."""
    g, x, mask = _step_mixture(net, params, aux_state, batch, noise)
    q, lp = expected_complete_log_lik(g, x)
    loss, n = _masked_mean(-q, mask)
    nll, _ = _masked_mean(-jax.lax.stop_gradient(lp), mask)
    return _with_penalty(loss, {"n_obs": n, "nll": nll}, net, params, aux_state, batch)


def make_ngem_loss(fisher: str = "component", damping: float = 0.0):
    """``loss(net, params, aux_state, batch, *, noise=None)`` of natural-gradient EM with the given Fisher
    weighting (:func:`natural_steps`); its value is the NLL per observed step."""
    if fisher not in FISHER_WEIGHTINGS:
        raise ValueError(f"fisher must be one of {FISHER_WEIGHTINGS}; got {fisher!r}")

    def ngem_loss(net, params, aux_state, batch: Batch, *, noise=None) -> tuple[jax.Array, dict]:
        g, x, mask = _step_mixture(net, params, aux_state, batch, noise)
        lp = gmm_lib.log_prob(g, x)
        if _em_head(aux_state):
            # Only the logits are gradient-trained; the components move by the M-step.
            # Under the component weighting the logits' step is the plain gradient of Q.
            sur = -expected_complete_log_lik(g, x)[0]
        else:
            sur = ngem_surrogate(g, x, min_scale=net.min_scale, max_scale=net.max_scale,
                                 fisher=fisher, damping=damping)
        nll, n = _masked_mean(-jax.lax.stop_gradient(lp), mask)
        s, _ = _masked_mean(sur, mask)
        loss = nll + s - jax.lax.stop_gradient(s)
        return _with_penalty(loss, {"n_obs": n, "nll": nll}, net, params, aux_state, batch)

    return ngem_loss


ngem_loss = make_ngem_loss("component")
