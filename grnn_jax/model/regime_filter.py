"""The filtering head: regimes carried by the exact forward algorithm inside the scan.

The network emits, at every step, a K x K transition matrix ``P_t = softmax_rows(A h_t + c)``
over regimes; the regime posterior is carried by the forward algorithm
(:func:`grnn_jax.em.hmm.forward`),

    alpha_t  ∝  (alpha_{t-1} P_t) ⊙ N(x_t | W_k phi_t + b_k, Sigma_k),

so the mixture weights of step t are the exact predictive regime probabilities
``pi_t = alpha_{t-1} P_t`` (the learned initial distribution at t = 0), not a guess of the
network. The components are global linear autoregressions (``lags = p``; p = 0: Gaussians)
held in the ``"em"`` collection, like the EM head's, and updated by the closed-form M-step
from posteriors smoothed over each training sequence
(:mod:`grnn_jax.train.em_training.em_state`). The log-likelihood of a sequence is
``sum_t log sum_k pi_tk N(x_t | k)``, the same per-step mixture every other head emits, so
evaluation, sampling and forecasting need nothing new.

With ``constant_transitions=True`` the transitions are one learned matrix: the model is a
linear autoregressive HMM (an AR-HMM), whatever the recurrent cells compute.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from grnn_jax import gmm as gmm_lib
from grnn_jax.em import hmm
from grnn_jax.model.em_head import broadcast_em_components, declare_em_components
from grnn_jax.model.grnn import GRNN, push_lag
from grnn_jax.model.heads import check_head_covariance_type

# Initial self-transition probability: regimes persist, as in most switching data.
INITIAL_STAY = 0.9


def _sticky_logits(k: int, dtype) -> jax.Array:
    """(K, K) logits whose row softmax stays with probability INITIAL_STAY."""
    if k == 1:
        return jnp.zeros((1, 1), dtype)
    off = jnp.log((1 - INITIAL_STAY) / (k - 1))
    return jnp.where(jnp.eye(k, dtype=bool), jnp.log(INITIAL_STAY), off).astype(dtype)


class RegimeFilterHead(nn.Module):
    """Transition matrices from hidden states, global regression components.

    Attributes:
      n_components: K regimes.
      n_features: D.
      covariance_type: "full", "diag", "spherical" or "tied".
      n_regressors: F = lags * D.
      constant_transitions: one learned (K, K) matrix instead of one per step from ``h``.
      kernel_scale: standard deviation multiplier of the initial transition kernel.
      dtype, param_dtype: as the other heads'.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> head = RegimeFilterHead(n_components=3, n_features=2, n_regressors=2)
      >>> h, phi = jnp.zeros((4, 8)), jnp.zeros((4, 2))
      >>> v = head.init(jax.random.key(0), h, phi, method=RegimeFilterHead.init_all)
      >>> head.apply(v, h, method=RegimeFilterHead.log_transitions).shape
      (4, 3, 3)
      >>> head.apply(v, phi, (4,), method=RegimeFilterHead.components)[0].shape
      (4, 3, 2)
    """

    n_components: int
    n_features: int
    covariance_type: str = "full"
    n_regressors: int = 0
    constant_transitions: bool = False
    kernel_scale: float = 0.1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def setup(self):
        check_head_covariance_type(self.covariance_type)
        k = self.n_components
        self.init_logits = self.param("init_logits", nn.initializers.zeros, (k,), self.param_dtype)
        sticky = lambda key, shape, dtype: _sticky_logits(k, dtype).reshape(shape)  # noqa: E731
        if self.constant_transitions:
            self.trans_logits = self.param("trans_logits", sticky, (k * k,), self.param_dtype)
        else:
            self.trans = nn.Dense(
                k * k,
                kernel_init=nn.initializers.variance_scaling(
                    self.kernel_scale**2, "fan_in", "truncated_normal"),
                bias_init=sticky, dtype=self.dtype, param_dtype=self.param_dtype, name="trans")
        self.comps = declare_em_components(self)

    def init_all(self, h, phi):
        """Touches every variable (for ``init``): transitions, initial logits, components."""
        return self.log_transitions(h), self.log_initial(), self.components(phi, h.shape[:-1])

    def log_initial(self) -> jax.Array:
        """(K,) log p(z_0)."""
        return jax.nn.log_softmax(self.init_logits)

    def log_transitions(self, h: jax.Array) -> jax.Array:
        """(..., K, K) row-normalised log P_t from hidden states ``h (..., H)``."""
        k = self.n_components
        if self.constant_transitions:
            logits = jnp.broadcast_to(self.trans_logits, h.shape[:-1] + (k * k,))
        else:
            logits = self.trans(h)
        return jax.nn.log_softmax(logits.reshape(h.shape[:-1] + (k, k)).astype(h.dtype), axis=-1)

    def components(self, phi: jax.Array | None, lead: tuple):
        """``(means (*lead, K, D), prec_chol)`` of the regimes given regressors ``phi (*lead, F)``
        (None without lags)."""
        dtype = phi.dtype if phi is not None else jnp.dtype(self.param_dtype)
        return broadcast_em_components(self.comps, tuple(lead), phi, dtype)


class FilterState(NamedTuple):
    """The filtering head's state between steps of :meth:`GRNN.step`.

    Attributes:
      lags: (*S, F) the last observations.
      log_predicted: (*S, K) the previous step's predictive log-weights.
      started: (*S,) whether a step has been taken (before it, the initial distribution).
    """

    lags: jax.Array
    log_predicted: jax.Array
    started: jax.Array


class FilterGRNN(GRNN):
    """A :class:`GRNN` whose mixture weights come from the exact regime filter.

    Attributes (besides :class:`GRNN`'s):
      constant_transitions: one learned transition matrix (an AR-HMM) instead of one per
        step from the network.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import model
      >>> net = model.FilterGRNN(n_features=2, n_components=3, hidden_size=8, lags=1)
      >>> x = jax.random.normal(jax.random.key(1), (4, 5, 2))
      >>> v = net.init(jax.random.key(0), x)
      >>> sorted(v["em"]["head"])
      ['ar_coef', 'means', 'prec_chol']
      >>> model.step_log_probs(net, v, x).shape
      (4, 5)
    """

    constant_transitions: bool = False

    @property
    def has_head_state(self) -> bool:
        return True

    def make_head(self) -> nn.Module:
        check_head_covariance_type(self.covariance_type)
        return RegimeFilterHead(
            n_components=self.n_components, n_features=self.n_features,
            covariance_type=self.covariance_type, n_regressors=self.n_regressors,
            constant_transitions=self.constant_transitions, dtype=self.dtype,
            param_dtype=self.dtype)

    def initial_head_state(self, batch_shape: tuple[int, ...]) -> FilterState:
        k = self.n_components
        return FilterState(jnp.zeros(batch_shape + (self.n_regressors,), self.dtype),
                           jnp.zeros(batch_shape + (k,), self.dtype),
                           jnp.zeros(batch_shape, bool))

    def filter_inputs(self, h: jax.Array, x: jax.Array):
        """What the forward algorithm reads for sequences ``x (B, T, D)`` with states ``h``:
        ``(log_init (K,), log_trans (B, T, K, K), log_emit (B, T, K), means, prec_chol, phi)``."""
        phi = self.regressors(x)
        means, prec_chol = self.head.components(phi, x.shape[:2])
        comps = gmm_lib.GMM(jnp.zeros(means.shape[:-1], means.dtype), means, prec_chol,
                            self.covariance_type)
        log_emit = gmm_lib.component_log_prob(comps, x)
        return self.head.log_initial(), self.head.log_transitions(h), log_emit, means, prec_chol, phi

    def filter_terms(self, x: jax.Array, u: jax.Array | None = None):
        """:meth:`filter_inputs` of ``x (B, T, D)`` (no training noise): for the E-step."""
        h = self.hidden(x, u)
        return self.filter_inputs(h, x)

    def emit(self, h: jax.Array, x: jax.Array) -> gmm_lib.GMM:
        log_init, log_trans, log_emit, means, prec_chol, _ = self.filter_inputs(h, x)
        filtered = jax.vmap(hmm.forward, in_axes=(None, 0, 0))(log_init, log_trans, log_emit)
        return gmm_lib.GMM(filtered.log_predicted, means, prec_chol, self.covariance_type)

    def emit_step(self, z: jax.Array, x_prev: jax.Array, state: FilterState):
        # Condition the previous step's regime on the observation it produced, then move it.
        lead = z.shape[:-1]
        means, prec_chol = self.head.components(state.lags if self.n_regressors else None, lead)
        prev = gmm_lib.GMM(state.log_predicted, means, prec_chol, self.covariance_type)
        log_filtered = gmm_lib.log_responsibilities(prev, x_prev)
        moved = jax.nn.logsumexp(log_filtered[..., :, None] + self.head.log_transitions(z), axis=-2)
        log_pred = jnp.where(state.started[..., None], moved, self.head.log_initial())
        lags = push_lag(state.lags, x_prev)
        means, prec_chol = self.head.components(lags if self.n_regressors else None, lead)
        g = gmm_lib.GMM(log_pred, means, prec_chol, self.covariance_type)
        return g, FilterState(lags, log_pred, jnp.ones_like(state.started))
