"""Autoregressive sampling from a GRNN: ``generate`` and ``forecast``.

Sampling runs the model's own one-step function (:meth:`GRNN.step`) inside one
``lax.scan``; each step's mixture is tempered with ``gmm.with_temperature``
before a sample is drawn and fed back as the next input.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax import gmm as gmm_lib
from grnn_jax.model.grnn import GRNN, shift_right
from grnn_jax._util.validation import check_int, concrete_value


def _prepare_prime(net: GRNN, prime, n_samples: int):
    if prime is None:
        return None
    prime = jnp.asarray(prime)
    d = net.n_features
    if prime.ndim == 2:
        prime = jnp.broadcast_to(prime, (n_samples,) + prime.shape)
    if prime.ndim != 3 or prime.shape[0] != n_samples or prime.shape[-1] != d:
        raise ValueError(f"prime must have shape (P, {d}) or ({n_samples}, P, {d}); got {prime.shape}")
    known = concrete_value(prime)
    if known is not None and not np.all(np.isfinite(known)):
        raise ValueError("prime contains NaN or inf")
    return prime if prime.shape[1] > 0 else None


def _prepare_covariates(net: GRNN, u, n_samples: int, n_total: int):
    c = net.n_covariates
    if c == 0:
        if u is not None:
            raise ValueError("u was given but the model has n_covariates=0")
        return None
    if u is None:
        raise ValueError(f"the model expects covariates u of shape (P + n_steps, {c}) = ({n_total}, {c})")
    u = jnp.asarray(u)
    if u.ndim == 2:
        u = jnp.broadcast_to(u, (n_samples,) + u.shape)
    if u.shape != (n_samples, n_total, c):
        raise ValueError(
            f"u must have shape ({n_total}, {c}) or ({n_samples}, {n_total}, {c}) "
            f"(one row per primed and generated step); got {u.shape}"
        )
    return u


def generate(key, net: GRNN, params, n_steps: int, *, n_samples: int = 1, prime=None,
             temperature=1.0, u=None) -> jax.Array:
    """Samples sequences autoregressively, optionally continuing a priming sequence.

    Args:
      key: PRNG key.
      net: the model.
      params: its variables.
      n_steps: steps to generate.
      n_samples: independent sequences.
      prime: (P, D) or (n_samples, P, D) observations fed first; the samples are
        conditioned on them and they are not returned.
      temperature: τ > 0 applied to every step's mixture (logits / τ, covariances × τ).
      u: (P + n_steps, C) or (n_samples, P + n_steps, C) covariates, one row per
        primed and generated step, when ``net.n_covariates > 0``.

    Returns:
      (n_samples, n_steps, D) samples.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax.model.grnn import GRNN
      >>> net = GRNN(n_features=2, n_components=3, hidden_size=8)
      >>> params = net.init(jax.random.key(0), jnp.zeros((1, 4, 2)))
      >>> generate(jax.random.key(1), net, params, 6, n_samples=5, prime=jnp.ones((3, 2))).shape
      (5, 6, 2)
    """
    n_steps = check_int(n_steps, "n_steps")
    n_samples = check_int(n_samples, "n_samples")
    tau = concrete_value(temperature)
    if tau is not None and not (np.all(np.isfinite(tau)) and np.all(tau > 0)):
        raise ValueError(f"temperature must be positive and finite; got {temperature!r}")
    prime = _prepare_prime(net, prime, n_samples)
    n_prime = 0 if prime is None else prime.shape[1]
    u = _prepare_covariates(net, u, n_samples, n_prime + n_steps)
    temperature = jnp.asarray(temperature, net.dtype)
    return _generate_jit(net, n_steps, n_samples, key, params, prime, temperature, u)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _generate_jit(net, n_steps, n_samples, key, params, prime, temperature, u):
    carry = net.apply(params, (n_samples,), method=GRNN.initial_carry)
    x_prev = jnp.zeros((n_samples, net.n_features), net.dtype)
    n_prime = 0
    if prime is not None:
        n_prime = prime.shape[1]
        carry = _primed_carry(net, params, carry, prime.astype(net.dtype),
                              None if u is None else u[:, :n_prime].astype(net.dtype))
        x_prev = prime[:, -1].astype(net.dtype)
    u_gen = None if u is None else jnp.swapaxes(u[:, n_prime:], 0, 1)

    def body(state, inp):
        carry, x_prev = state
        k, u_t = inp
        carry, g = net.apply(params, carry, x_prev, u_t, method=GRNN.step)
        x, _ = gmm_lib.sample_with_labels(k, gmm_lib.with_temperature(g, temperature))
        x = x.astype(net.dtype)
        return (carry, x), x

    keys = jax.random.split(key, n_steps)
    _, xs = jax.lax.scan(body, (carry, x_prev), (keys, u_gen))
    return jnp.swapaxes(xs, 0, 1)


def _primed_carry(net, params, carry, prime, u):
    """The carry after reading ``prime (N, P, D)``: one scan of the cells when only they hold
    state, else the one-step function over the prime (the head's lag buffer and regime filter
    follow the observations exactly as during generation)."""
    if not net.has_head_state:
        inputs = shift_right(prime) if u is None else jnp.concatenate([shift_right(prime), u], -1)
        return net.apply(params, inputs, carry, method=GRNN.encode)[0]

    def body(carry, inp):
        x_prev, u_t = inp
        return net.apply(params, carry, x_prev, u_t, method=GRNN.step)[0], None

    xs = (jnp.swapaxes(shift_right(prime), 0, 1), None if u is None else jnp.swapaxes(u, 0, 1))
    return jax.lax.scan(body, carry, xs)[0]


def forecast(key, net: GRNN, params, prefix, n_steps: int, *, n_paths: int = 100,
             quantiles=(0.05, 0.5, 0.95), temperature=1.0, u=None) -> dict:
    """Sample paths continuing ``prefix``, with their pointwise quantiles and mean.

    Args:
      key: PRNG key.
      net: the model.
      params: its variables.
      prefix: (P, D) observed history to condition on.
      n_steps: horizon.
      n_paths: sampled continuations.
      quantiles: levels in [0, 1].
      temperature: as in :func:`generate`.
      u: (P + n_steps, C) covariates when ``net.n_covariates > 0``.

    Returns:
      dict with ``paths`` (n_paths, n_steps, D), ``quantiles`` (len(quantiles), n_steps, D)
      and ``mean`` (n_steps, D).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax.model.grnn import GRNN
      >>> net = GRNN(n_features=1, n_components=2, hidden_size=4)
      >>> params = net.init(jax.random.key(0), jnp.zeros((1, 4, 1)))
      >>> out = forecast(jax.random.key(1), net, params, jnp.zeros((4, 1)), 3, n_paths=8)
      >>> out["paths"].shape, out["quantiles"].shape, out["mean"].shape
      ((8, 3, 1), (3, 3, 1), (3, 1))
    """
    prefix = jnp.asarray(prefix)
    if prefix.ndim != 2 or prefix.shape[-1] != net.n_features:
        raise ValueError(f"prefix must have shape (P, {net.n_features}); got {prefix.shape}")
    q = np.asarray(quantiles, dtype=float)
    if q.ndim != 1 or q.size == 0 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"quantiles must be a non-empty sequence of levels in [0, 1]; got {quantiles!r}")
    paths = generate(key, net, params, n_steps, n_samples=check_int(n_paths, "n_paths"),
                     prime=prefix, temperature=temperature, u=u)
    return {
        "paths": paths,
        "quantiles": jnp.quantile(paths, jnp.asarray(q, paths.dtype), axis=0),
        "mean": jnp.mean(paths, axis=0),
    }
