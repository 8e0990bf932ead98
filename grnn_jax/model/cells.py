"""Recurrent cells split into an input projection and a recurrence.

Each cell is a Flax module that only owns its parameters (``weights()``
returns them as a dict); its arithmetic is two pure functions:

* ``project(w, x)`` — the input half of the gate pre-activations, ``(..., G*H)``;
* ``recur(w, carry, xp) -> (carry, h)`` — the state update from a projected input;
* ``scan(w, carry, xs) -> (carry, hs)`` — ``project`` and ``recur`` over a whole
  time-major sequence: a plain ``lax.scan`` of them, except for the LSTM, whose
  scan has a hand-written backward pass (:mod:`grnn_jax.model.lstm_scan`).

Keeping the arithmetic pure lets the model run it over whole sequences in
training and, unchanged, one step at a time in generation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from grnn_jax.model.lstm_scan import lstm_sequence

_LN_EPS = 1e-5


def _layer_norm(z: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    mean = jnp.mean(z, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
    return (z - mean) * jax.lax.rsqrt(var + _LN_EPS) * scale + bias


def _masked(h: jax.Array, hmask: jax.Array | None) -> jax.Array:
    # Variational recurrent dropout thins only what the recurrent matmul reads (for the GRU
    # also not its interpolation with the previous state).
    return h if hmask is None else h * hmask


def _lstm_bias_init(hidden_size: int):
    # Forget-gate bias 1 (Jozefowicz et al., 2015): gradients flow through c early on.
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.zeros(shape, dtype).at[hidden_size : 2 * hidden_size].set(1.0)

    return init


class _Cell(nn.Module):
    """Base: a cell with ``in_features`` inputs and ``hidden_size`` units."""

    hidden_size: int
    in_features: int
    param_dtype: Any = jnp.float32

    n_gates = 4

    def setup(self):
        self.params_ = self._declare()

    def weights(self) -> dict:
        """The cell's parameters as a dict of arrays (for the pure functions)."""
        return dict(self.params_)

    def _declare(self) -> dict:
        raise NotImplementedError

    def _kernels(self):
        h = self.hidden_size
        wi = self.param(
            "wi", nn.initializers.lecun_normal(), (self.in_features, self.n_gates * h), self.param_dtype
        )
        wh = self.param("wh", nn.initializers.orthogonal(), (h, self.n_gates * h), self.param_dtype)
        return wi, wh

    def initial_carry(self, batch_shape: tuple[int, ...], dtype: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def scan(cls, w: dict, carry, xs: jax.Array, hmask: jax.Array | None = None):
        """``project`` and ``recur`` over time-major inputs ``xs (T, B, F)``: ``(carry, (T, B, H))``.

        ``hmask`` (B, H), when given, multiplies the state the recurrent matmul reads at every
        step (variational recurrent dropout); outputs and carried state stay unmasked.
        """
        return jax.lax.scan(lambda c, x: cls.recur(w, c, cls.project(w, x), hmask), carry, xs)


class LSTMCell(_Cell):
    """LSTM with fused gates (order i, f, g, o) and forget bias 1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> cell = LSTMCell(hidden_size=4, in_features=2)
      >>> w = cell.init(jax.random.key(0), method=LSTMCell.weights)["params"]
      >>> carry = cell.initial_carry((3,), jnp.float32)
      >>> carry, h = LSTMCell.recur(w, carry, LSTMCell.project(w, jnp.ones((3, 2))))
      >>> h.shape
      (3, 4)
    """

    def _declare(self) -> dict:
        wi, wh = self._kernels()
        b = self.param("b", _lstm_bias_init(self.hidden_size), (4 * self.hidden_size,), self.param_dtype)
        return {"wi": wi, "wh": wh, "b": b}

    @staticmethod
    def project(w: dict, x: jax.Array) -> jax.Array:
        return x @ w["wi"] + w["b"]

    @staticmethod
    def recur(w: dict, carry, xp: jax.Array, hmask: jax.Array | None = None):
        c, h = carry
        i, f, g, o = jnp.split(xp + _masked(h, hmask) @ w["wh"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    @classmethod
    def scan(cls, w: dict, carry, xs: jax.Array, hmask: jax.Array | None = None):
        """As :meth:`_Cell.scan`, through :func:`~grnn_jax.model.lstm_scan.lstm_sequence`."""
        c, h = carry
        return lstm_sequence(jnp.concatenate([w["wi"], w["wh"]]), w["b"], c, h, xs, hmask)

    def initial_carry(self, batch_shape, dtype):
        z = jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype)
        return (z, z)


class LayerNormLSTMCell(LSTMCell):
    """LSTM with layer normalisation of both gate halves and of the cell (Ba et al., 2016).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> cell = LayerNormLSTMCell(hidden_size=4, in_features=2)
      >>> w = cell.init(jax.random.key(0), method=LayerNormLSTMCell.weights)["params"]
      >>> carry = cell.initial_carry((3,), jnp.float32)
      >>> xp = LayerNormLSTMCell.project(w, jnp.ones((3, 2)))
      >>> LayerNormLSTMCell.recur(w, carry, xp)[1].shape
      (3, 4)
    """

    def _declare(self) -> dict:
        wi, wh = self._kernels()
        g4 = 4 * self.hidden_size
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        p = lambda name, init, n: self.param(name, init, (n,), self.param_dtype)  # noqa: E731
        return {
            "wi": wi,
            "wh": wh,
            "b": p("b", _lstm_bias_init(self.hidden_size), g4),
            "ln_x_scale": p("ln_x_scale", ones, g4),
            "ln_h_scale": p("ln_h_scale", ones, g4),
            "ln_c_scale": p("ln_c_scale", ones, self.hidden_size),
            "ln_c_bias": p("ln_c_bias", zeros, self.hidden_size),
        }

    @staticmethod
    def project(w: dict, x: jax.Array) -> jax.Array:
        return _layer_norm(x @ w["wi"], w["ln_x_scale"], w["b"])

    @staticmethod
    def recur(w: dict, carry, xp: jax.Array, hmask: jax.Array | None = None):
        c, h = carry
        hp = _layer_norm(_masked(h, hmask) @ w["wh"], w["ln_h_scale"], 0.0)
        i, f, g, o = jnp.split(xp + hp, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(_layer_norm(c, w["ln_c_scale"], w["ln_c_bias"]))
        return (c, h), h

    # The hand-written LSTM backward pass does not know the layer norms: the plain scan.
    scan = classmethod(_Cell.scan.__func__)


class GRUCell(_Cell):
    """GRU as cuDNN and PyTorch define it (reset gate applied after the recurrent matmul).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> cell = GRUCell(hidden_size=4, in_features=2)
      >>> w = cell.init(jax.random.key(0), method=GRUCell.weights)["params"]
      >>> carry = cell.initial_carry((3,), jnp.float32)
      >>> GRUCell.recur(w, carry, GRUCell.project(w, jnp.ones((3, 2))))[1].shape
      (3, 4)
    """

    n_gates = 3

    def _declare(self) -> dict:
        wi, wh = self._kernels()
        g3 = 3 * self.hidden_size
        zeros = nn.initializers.zeros
        return {
            "wi": wi,
            "wh": wh,
            "bi": self.param("bi", zeros, (g3,), self.param_dtype),
            "bh": self.param("bh", zeros, (g3,), self.param_dtype),
        }

    @staticmethod
    def project(w: dict, x: jax.Array) -> jax.Array:
        return x @ w["wi"] + w["bi"]

    @staticmethod
    def recur(w: dict, carry, xp: jax.Array, hmask: jax.Array | None = None):
        h = carry
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        hr, hz, hn = jnp.split(_masked(h, hmask) @ w["wh"] + w["bh"], 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        return h, h

    def initial_carry(self, batch_shape, dtype):
        return jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype)


CELLS = {"lstm": LSTMCell, "gru": GRUCell, "ln_lstm": LayerNormLSTMCell}


def check_cell(cell: str) -> str:
    """Returns ``cell`` or raises a ValueError naming the known cells."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {tuple(CELLS)}")
    return cell
