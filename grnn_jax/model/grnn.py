"""The Gaussian-mixture recurrent network and its sequence log-likelihood.

At step ``t`` the network reads ``x_{t-1} ++ u_t`` (``x_0 = 0``) and its head
emits the mixture ``p(x_t | x_<t, u_<=t)``: the first observation is predicted
from the initial state alone. With ``lags = p > 0`` every component's mean also moves
linearly with the last ``p`` observations ``phi_t = [x_{t-1}, ..., x_{t-p}]``
(:func:`grnn_jax.data.lags.lagged`: zeros stand for the steps before the start, so step
``t < p`` conditions on ``x_0..x_{t-1}`` and zeros), as in a linear autoregressive HMM. Training scans the cells over the whole sequence
and applies the head once to all hidden states; generation calls
:meth:`GRNN.step`, which runs the same cells and the same head one step at a
time, so the two paths cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from grnn_jax import gmm as gmm_lib
from grnn_jax.data.lags import lagged
from grnn_jax.data.masks import mask_from_lengths
from grnn_jax.model.heads import MixtureHead, check_head_covariance_type
from grnn_jax.model.cells import CELLS, check_cell
from grnn_jax.model import regularise
from grnn_jax._util.validation import check_finite_steps, concrete_value

# Layout choices (LSTM hidden 256, T=100, batch 64, 3-D input, K=20 full; the
# numbers and where the time goes are in the README's notes):
# * one scan per layer, each with its input projection inside the step: hoisted
#   out as one (T*B, F) @ (F, 4H) matmul, a 3-wide first-layer input costs more
#   (a slow narrow matmul, a 26 MB broadcast add and its transposed gradient)
#   than the scan saves; stacking all layers in one scan compiled 2.4x slower
#   for no gain;
# * the LSTM's scan has a hand-written backward pass (nets/lstm_scan.py);
# * scan unroll 2 or 4: no gain, slower compile;
# * the hand-written fused-gate cells vs flax's nn.OptimizedLSTMCell and
#   nn.LSTMCell under nn.RNN (autodiff, LSTM forward + backward): 0.34, 0.35, 0.36 s.


class GRNN(nn.Module):
    """Recurrent cells + a mixture head over the next observation.

    Attributes:
      n_features: D, the observation dimension.
      n_components: K, mixture components per step.
      covariance_type: "full", "diag", "spherical" or "tied" (see :mod:`grnn_jax.model.heads`).
      cell: "lstm", "gru" or "ln_lstm" (layer-normalised LSTM).
      hidden_size: H, units per layer.
      n_layers: stacked recurrent layers.
      n_covariates: C, width of the optional covariates ``u``.
      dtype: parameter and computation dtype.
      min_scale: lower bound on the head's standard deviations.
      max_scale: upper bound on the head's standard deviations.
      lags: p >= 0; every component's mean adds ``W_k phi_t`` over the last p observations
        (0: today's mixture head, bit for bit).

    Call:
      x: (B, T, D) observations; u: (B, T, C) covariates when ``n_covariates > 0``;
      noise: training-time input noise and variational dropout
      (:class:`grnn_jax.model.regularise.Noise`), None in evaluation.

    Returns:
      a ``gmm.GMM`` with batch shape (B, T); step ``t`` models ``x[:, t]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = GRNN(n_features=2, n_components=3, hidden_size=8)
      >>> x = jnp.zeros((4, 5, 2))
      >>> params = net.init(jax.random.key(0), x)
      >>> net.apply(params, x).means.shape
      (4, 5, 3, 2)
    """

    n_features: int
    n_components: int
    covariance_type: str = "full"
    cell: str = "lstm"
    hidden_size: int = 64
    n_layers: int = 1
    n_covariates: int = 0
    dtype: Any = jnp.float32
    min_scale: float = 1e-3
    max_scale: float = 1e3
    lags: int = 0

    def setup(self):
        check_cell(self.cell)
        check_head_covariance_type(self.covariance_type)
        for name in ("n_features", "n_components", "hidden_size", "n_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("n_covariates", "lags"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        cls = CELLS[self.cell]
        in0 = self.n_features + self.n_covariates
        self.cells = [
            cls(self.hidden_size, in_features=in0 if i == 0 else self.hidden_size, param_dtype=self.dtype)
            for i in range(self.n_layers)
        ]
        self.head = self.make_head()

    def make_head(self) -> nn.Module:
        """The head over the top layer's outputs (a subclass may return another kind)."""
        return MixtureHead(
            n_components=self.n_components,
            n_features=self.n_features,
            covariance_type=self.covariance_type,
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            n_regressors=self.n_regressors,
            dtype=self.dtype,
            param_dtype=self.dtype,
        )

    @property
    def n_regressors(self) -> int:
        """F = lags * D, the width of the regressors ``phi_t``."""
        return int(self.lags) * int(self.n_features)

    @property
    def has_head_state(self) -> bool:
        """Whether :meth:`step` carries state of the head's own (the lag buffer) beside the cells'."""
        return self.lags > 0

    def initial_carry(self, batch_shape: tuple[int, ...]):
        """The zero state for ``batch_shape`` sequences: one carry per layer, and a
        :class:`StepCarry` holding the head's state too when :attr:`has_head_state`."""
        cells = self.initial_cell_carry(batch_shape)
        if not self.has_head_state:
            return cells
        return StepCarry(cells, self.initial_head_state(tuple(batch_shape)))

    def initial_cell_carry(self, batch_shape: tuple[int, ...]) -> tuple:
        """The recurrent layers' zero state: one carry per layer."""
        return tuple(c.initial_carry(tuple(batch_shape), self.dtype) for c in self.cells)

    def initial_head_state(self, batch_shape: tuple[int, ...]):
        """The lag buffer before the first step: zeros, (*S, F)."""
        return jnp.zeros(batch_shape + (self.n_regressors,), self.dtype)

    def regressors(self, x: jax.Array) -> jax.Array | None:
        """(B, T, F) lagged observations of ``x (B, T, D)``, or None without lags."""
        return lagged(x, int(self.lags), check=False) if self.lags else None

    def emit(self, h: jax.Array, x: jax.Array):
        """The mixtures of a whole sequence from its hidden states ``h (B, T, H)`` and
        observations ``x (B, T, D)`` (read only through the lags, never at step t itself)."""
        phi = self.regressors(x)
        return self.head(h) if phi is None else self.head(h, phi)

    def emit_step(self, z: jax.Array, x_prev: jax.Array, state):
        """One step's mixture from the top layer's output ``z (*S, H)``, and the new head state."""
        phi = push_lag(state, x_prev)
        return self.head(z, phi), phi

    def step(self, carry: tuple, x_prev: jax.Array, u: jax.Array | None = None):
        """One step: the previous observation (and current covariates) in, the next mixture out.

        Args:
          carry: from :meth:`initial_carry` or a previous step, batch shape ``S``.
          x_prev: (*S, D) previous observation (zeros before the first step).
          u: (*S, C) covariates of the step being predicted, when ``n_covariates > 0``.

        Returns:
          ``(carry, g)`` with ``g`` a GMM of batch shape ``S``.
        """
        x_prev = jnp.asarray(x_prev, self.dtype)
        cells, head_state = (carry.cells, carry.head) if self.has_head_state else (carry, None)
        z = self._join(x_prev, u)
        new = []
        for cell, c in zip(self.cells, cells):
            w, cls = cell.weights(), type(cell)
            c, z = cls.recur(w, c, cls.project(w, z))
            new.append(c)
        if not self.has_head_state:
            return tuple(new), self.head(z)
        g, head_state = self.emit_step(z, x_prev, head_state)
        return StepCarry(tuple(new), head_state), g

    def encode(self, inputs: jax.Array, carry: tuple | None = None, *,
               output_masks: tuple | None = None, recurrent_masks: tuple | None = None):
        """Runs the cells over already shifted inputs.

        Args:
          inputs: (B, T, D + C) network inputs (``x_{t-1} ++ u_t``).
          carry: starting state; zeros when None.
          output_masks: one (B, H) multiplier (or None) per layer, applied to that layer's
            outputs at every time step (variational dropout; training only).
          recurrent_masks: one (B, H) multiplier (or None) per layer, applied at every step
            to the state that layer's recurrent matmul reads (training only).

        Returns:
          ``(carry, h)``: the state after the last step and (B, T, H) top-layer outputs.
        """
        if carry is None:
            carry = self.initial_cell_carry(inputs.shape[:1])
        none = (None,) * len(self.cells)
        z = jnp.swapaxes(inputs.astype(self.dtype), 0, 1)  # time-major for the scan
        final = []
        for cell, c0, m, hm in zip(self.cells, carry, output_masks or none, recurrent_masks or none):
            w, cls = cell.weights(), type(cell)
            c_last, z = cls.scan(w, c0, z) if hm is None else cls.scan(w, c0, z, hm)
            if m is not None:
                z = z * m[None]
            final.append(c_last)
        return tuple(final), jnp.swapaxes(z, 0, 1)

    def __call__(self, x: jax.Array, u: jax.Array | None = None,
                 noise: regularise.Noise | None = None) -> gmm_lib.GMM:
        """The mixtures over ``x``; ``noise`` (training only) perturbs what the network reads,
        never the observations the mixtures model."""
        x, u = check_inputs(self, x, u)
        return self.emit(self._encode_observations(x, u, noise), x)

    def hidden(self, x: jax.Array, u: jax.Array | None = None) -> jax.Array:
        """(B, T, H) top-layer outputs: ``[:, t]`` is the state the head reads to predict ``x[:, t]``."""
        x, u = check_inputs(self, x, u)
        return self._encode_observations(x, u, None)

    def _encode_observations(self, x, u, noise):
        x_prev = shift_right(x)
        if noise is None:
            return self.encode(self._join(x_prev, u))[1]
        inputs = self._join(*regularise.noisy_inputs(noise, x_prev, u)).astype(self.dtype)
        b = inputs.shape[0]
        m_in = regularise.input_mask(noise, b, inputs.shape[-1], self.dtype)
        if m_in is not None:
            inputs = inputs * m_in[:, None]
        shape = (self.n_layers, b, self.hidden_size, self.dtype)
        return self.encode(inputs, output_masks=regularise.output_masks(noise, *shape),
                           recurrent_masks=regularise.recurrent_masks(noise, *shape))[1]

    def _join(self, x: jax.Array, u: jax.Array | None) -> jax.Array:
        if self.n_covariates == 0:
            return x
        return jnp.concatenate([x, jnp.asarray(u, x.dtype)], axis=-1)


class StepCarry(NamedTuple):
    """The state :meth:`GRNN.step` carries when the head has state of its own.

    Attributes:
      cells: one carry per recurrent layer.
      head: the head's state (the lag buffer, and for the filtering head the regime filter).
    """

    cells: tuple
    head: Any


def push_lag(buffer: jax.Array, x_prev: jax.Array) -> jax.Array:
    """The lag buffer ``[x_{t-1}, ..., x_{t-p}]`` (*S, p*D) after ``x_prev (*S, D)`` arrives.

    Example:
      >>> import jax.numpy as jnp
      >>> push_lag(jnp.array([[1.0, 2.0]]), jnp.array([[3.0]])).tolist()
      [[3.0, 1.0]]
    """
    d = x_prev.shape[-1]
    if buffer.shape[-1] == 0:
        return buffer
    return jnp.concatenate([x_prev.astype(buffer.dtype), buffer[..., : buffer.shape[-1] - d]], -1)


def shift_right(x: jax.Array) -> jax.Array:
    """(B, T, D) -> (B, T, D) with ``out[:, t] = x[:, t-1]`` and zeros at t=0."""
    return jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def check_inputs(net: GRNN, x, u=None):
    """Checks ranks and widths of ``x (B, T, D)`` and ``u (B, T, C)``; returns them as arrays.

    Works on tracers (only static shapes are read).
    """
    x = jnp.asarray(x)
    if x.ndim != 3 or x.shape[-1] != net.n_features:
        raise ValueError(f"x must have shape (B, T, {net.n_features}); got {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"x has no time steps (shape {x.shape})")
    if net.n_covariates == 0:
        if u is not None:
            raise ValueError("u was given but the model has n_covariates=0")
        return x, None
    if u is None:
        raise ValueError(f"the model expects covariates u of shape (B, T, {net.n_covariates})")
    u = jnp.asarray(u)
    if u.shape != x.shape[:2] + (net.n_covariates,):
        raise ValueError(f"u must have shape {x.shape[:2] + (net.n_covariates,)}; got {u.shape}")
    return x, u


def step_log_probs(net: GRNN, params, x, lengths=None, u=None, *,
                   noise: regularise.Noise | None = None) -> jax.Array:
    """Per-step log-likelihoods ``log p(x_t | x_<t, u_<=t)``; 0 at padded steps.

    Padded steps (``t >= lengths[b]``) may hold anything, NaN included: they are
    replaced by zeros before the network sees them, so they change neither the
    value nor the gradients of the valid steps.

    Args:
      net: the model.
      params: its variables.
      x: (B, T, D) observations.
      lengths: (B,) valid steps per sequence; all T when None.
      u: (B, T, C) covariates when ``net.n_covariates > 0``.
      noise: training-time noise (:mod:`grnn_jax.model.regularise`) of what the network
        reads; None (evaluation) is deterministic.

    Returns:
      (B, T) log-densities.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = GRNN(n_features=1, n_components=2, hidden_size=4)
      >>> x = jnp.zeros((2, 3, 1))
      >>> params = net.init(jax.random.key(0), x)
      >>> lp = step_log_probs(net, params, x, lengths=jnp.array([3, 1]))
      >>> lp.shape, float(lp[1, 2])
      ((2, 3), 0.0)
    """
    x, u, mask = _checked_masked_inputs(net, x, lengths, u)
    return _masked_step_log_probs(net, params, x, mask, u, noise)


def _checked_masked_inputs(net: GRNN, x, lengths, u):
    """(x, u, mask) after every host-side check: shapes, lengths in [0, T] where their
    values are known, and no NaN/inf inside the valid steps."""
    x, u = check_inputs(net, x, u)
    b, t, _ = x.shape
    if lengths is None:
        mask = jnp.ones((b, t), bool)
    else:
        mask = mask_from_lengths(lengths, t)
        if mask.shape[0] != b:
            raise ValueError(f"lengths has {mask.shape[0]} entries for {b} sequences")
        known = concrete_value(lengths)
        if known is not None and (known.min() < 0 or known.max() > t):
            raise ValueError(f"lengths must lie in [0, {t}]; got min {known.min()}, max {known.max()}")
    _check_valid_finite(x, mask, "x")
    if u is not None:
        _check_valid_finite(u, mask, "u")
    return x, u, mask


def _zero_padding(x, u, mask):
    # Padding is zeroed before the network sees it: NaN there would otherwise
    # reach the gradients through 0 * NaN in the backward pass.
    x = jnp.where(mask[..., None], x, 0)
    if u is not None:
        u = jnp.where(mask[..., None], u, 0)
    return x, u


@functools.partial(jax.jit, static_argnums=0)
def _masked_step_log_probs(net, params, x, mask, u, noise=None):
    x, u = _zero_padding(x, u, mask)
    g = net.apply(params, x, u, noise)
    return jnp.where(mask, gmm_lib.log_prob(g, x), 0.0)


def _check_valid_finite(a, mask, name: str) -> None:
    a_np, m_np = concrete_value(a), concrete_value(mask)
    if a_np is not None and m_np is not None:
        check_finite_steps(a_np, m_np, name)


def sequence_log_prob(net: GRNN, params, x, lengths=None, u=None) -> jax.Array:
    """(B,) log-likelihood of each sequence: the sum of :func:`step_log_probs` over valid steps.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = GRNN(n_features=1, n_components=2, hidden_size=4)
      >>> x = jnp.zeros((2, 3, 1))
      >>> params = net.init(jax.random.key(0), x)
      >>> sequence_log_prob(net, params, x).shape
      (2,)
    """
    return jnp.sum(step_log_probs(net, params, x, lengths, u), axis=-1)


def hidden_states(net: GRNN, params, x, lengths=None, u=None) -> jax.Array:
    """Per-step top-layer hidden states; zeros at padded steps.

    ``[:, t]`` summarises ``x_<t`` (and ``u_<=t``): the state from which the head predicts
    ``x[:, t]``. Padded steps are zeroed before the network sees them, as in
    :func:`step_log_probs`.

    Args:
      net: the model.
      params: its variables.
      x: (B, T, D) observations.
      lengths: (B,) valid steps per sequence; all T when None.
      u: (B, T, C) covariates when ``net.n_covariates > 0``.

    Returns:
      (B, T, H) states.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = GRNN(n_features=1, n_components=2, hidden_size=4)
      >>> x = jnp.zeros((2, 3, 1))
      >>> params = net.init(jax.random.key(0), x)
      >>> h = hidden_states(net, params, x, lengths=jnp.array([3, 1]))
      >>> h.shape, float(jnp.abs(h[1, 1:]).sum())
      ((2, 3, 4), 0.0)
    """
    x, u, mask = _checked_masked_inputs(net, x, lengths, u)
    return _masked_hidden_states(net, params, x, mask, u)


@functools.partial(jax.jit, static_argnums=0)
def _masked_hidden_states(net, params, x, mask, u):
    x, u = _zero_padding(x, u, mask)
    h = net.apply(params, x, u, method=GRNN.hidden)
    return jnp.where(mask[..., None], h, 0.0)
