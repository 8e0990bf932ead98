"""The LSTM recurrence as one GPU kernel per direction (Pallas on Triton).

A ``lax.scan`` LSTM on a GPU launches its step's matmul and gate fusions once per
time step, forward and backward, and waits on the loop's condition in between;
at hidden 256 and batch 64 each launch does a few microseconds of work. Here the
whole recurrence is one kernel: each program owns ``block_rows`` rows of the
batch, keeps their cell and hidden state in registers for all T steps and reads
the recurrent weight from the L2 cache at every step. The state is held as
``H / piece`` column pieces of width ``piece`` (Triton cannot slice a register
tensor), so each gate pre-activation is a sum of ``H / piece`` small ``dot``s.

The input projection ``xs @ w_x + b`` is one GEMM before the forward kernel, and
the weight, bias and input gradients are GEMMs after the backward kernel, which
only runs the state-gradient recurrence and writes the gate pre-activation
gradients of every step (as :mod:`grnn_jax.nets.lstm_scan` does).

Matmuls in the kernel run at Triton's default float32 precision (TF32 on Ampere
and later), as XLA's default GPU matmuls do. The arithmetic is that of
:func:`grnn_jax.nets.lstm_scan.lstm_sequence`; the tests compare values and
gradients with it (the kernel interpreted on the CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

BLOCK_ROWS = 16  # rows of the batch per program: Triton's smallest dot
NUM_WARPS = 4
RELOAD_GUARD = False  # offset the weight loads by a loop-dependent zero (against hoisting)
_PIECES_MAX = 8  # more state pieces unroll too many dots per step


def state_piece(hidden: int) -> int | None:
    """The width of the state's column pieces for ``hidden`` units, or None if unsupported.

    A power of two from 16 to 64 dividing ``hidden``, with at most 8 pieces (so
    hidden 16 to 512).

    Example:
      >>> state_piece(256), state_piece(48), state_piece(1024)
      (64, 16, None)
    """
    for piece in (64, 32, 16):
        if hidden % piece == 0:
            return piece if hidden // piece <= _PIECES_MAX else None
    return None


def _pieces(ref, t, n_pieces, piece, offset=0):
    """The ``n_pieces`` column pieces of ``ref[t]`` (or of ``ref`` with ``t`` None)."""
    idx = () if t is None else (t,)
    return tuple(ref[idx + (slice(None), pl.ds(offset + k * piece, piece))] for k in range(n_pieces))


def _store_pieces(ref, t, values, piece, offset=0):
    for k, v in enumerate(values):
        ref[t, :, pl.ds(offset + k * piece, piece)] = v


def _forward_kernel(xp_ref, wh_ref, c0_ref, h0_ref, hm_ref, hs_ref, cs_ref, i_ref, f_ref, g_ref,
                    o_ref, c_last_ref, h_last_ref, *, piece, interpret):
    n_steps, _, n = hs_ref.shape
    m = n // piece
    hm = None if hm_ref is None else _pieces(hm_ref, None, m, piece)
    dot = jnp.dot if interpret else plgpu.dot

    def body(t, carry):
        zero = t // (n_steps + 1) if RELOAD_GUARD else 0
        c, h = carry
        hr = h if hm is None else tuple(a * b for a, b in zip(h, hm))
        acts = [[None] * m for _ in range(4)]
        for j in range(m):
            for gate in range(4):
                col = gate * n + j * piece
                a = xp_ref[t, :, pl.ds(col, piece)]
                for k in range(m):
                    a = a + dot(hr[k], wh_ref[pl.ds(zero + k * piece, piece), pl.ds(col, piece)])
                acts[gate][j] = jnp.tanh(a) if gate == 2 else jax.nn.sigmoid(a)
        i, f, g, o = acts
        c = tuple(f[j] * c[j] + i[j] * g[j] for j in range(m))
        h = tuple(o[j] * jnp.tanh(c[j]) for j in range(m))
        for ref, vals in ((hs_ref, h), (cs_ref, c), (i_ref, i), (f_ref, f), (g_ref, g), (o_ref, o)):
            _store_pieces(ref, t, vals, piece)
        return c, h

    init = (_pieces(c0_ref, None, m, piece), _pieces(h0_ref, None, m, piece))
    c, h = jax.lax.fori_loop(0, n_steps, body, init)
    for k in range(m):
        c_last_ref[:, pl.ds(k * piece, piece)] = c[k]
        h_last_ref[:, pl.ds(k * piece, piece)] = h[k]


def _backward_kernel(dhs_ref, cs_ref, i_ref, f_ref, g_ref, o_ref, wh_ref, c0_ref, hm_ref,
                     dc_last_ref, dh_last_ref, das_ref, dc0_ref, dh0_ref, *, piece, interpret):
    n_steps, _, n = cs_ref.shape
    m = n // piece
    hm = None if hm_ref is None else _pieces(hm_ref, None, m, piece)
    c0 = _pieces(c0_ref, None, m, piece)
    dot = (lambda a, b: jnp.dot(a, b.T)) if interpret else functools.partial(plgpu.dot, trans_b=True)

    def body(s, carry):
        dc, dh = carry
        t = n_steps - 1 - s
        zero = s // (n_steps + 1) if RELOAD_GUARD else 0
        tp = jnp.maximum(t - 1, 0)
        dhs, c = _pieces(dhs_ref, t, m, piece), _pieces(cs_ref, t, m, piece)
        cp = tuple(jnp.where(t > 0, a, b) for a, b in zip(_pieces(cs_ref, tp, m, piece), c0))
        i, f, g, o = (_pieces(r, t, m, piece) for r in (i_ref, f_ref, g_ref, o_ref))
        das = [[None] * m for _ in range(4)]
        dc_next = []
        for j in range(m):
            dh_j = dh[j] + dhs[j]
            tc = jnp.tanh(c[j])
            dc_j = dc[j] + dh_j * o[j] * (1 - tc * tc)
            das[0][j] = dc_j * g[j] * i[j] * (1 - i[j])
            das[1][j] = dc_j * cp[j] * f[j] * (1 - f[j])
            das[2][j] = dc_j * i[j] * (1 - g[j] * g[j])
            das[3][j] = dh_j * tc * o[j] * (1 - o[j])
            dc_next.append(dc_j * f[j])
        dh_prev = []
        for k in range(m):
            acc = jnp.zeros_like(dh[k])
            for gate in range(4):
                for j in range(m):
                    col = gate * n + j * piece
                    acc = acc + dot(das[gate][j], wh_ref[pl.ds(zero + k * piece, piece), pl.ds(col, piece)])
            dh_prev.append(acc if hm is None else acc * hm[k])
        for gate in range(4):
            _store_pieces(das_ref, t, das[gate], piece, offset=gate * n)
        return tuple(dc_next), tuple(dh_prev)

    init = (_pieces(dc_last_ref, None, m, piece), _pieces(dh_last_ref, None, m, piece))
    dc, dh = jax.lax.fori_loop(0, n_steps, body, init)
    for k in range(m):
        dc0_ref[:, pl.ds(k * piece, piece)] = dc[k]
        dh0_ref[:, pl.ds(k * piece, piece)] = dh[k]


def _rows_spec(shape):
    """BlockSpec of ``BLOCK_ROWS`` batch rows of a (B, H) or (T, B, H) array."""
    if len(shape) == 2:
        return pl.BlockSpec((BLOCK_ROWS, shape[1]), lambda r: (r, 0))
    return pl.BlockSpec((shape[0], BLOCK_ROWS, shape[2]), lambda r: (0, r, 0))


def _call(kernel, inputs, out_shapes, *, piece, interpret, name):
    """Runs ``kernel`` over the batch in programs of ``BLOCK_ROWS`` rows.

    ``inputs`` are ``(array, whole)`` pairs: ``whole`` arrays (the weight) go to every
    program entire, the others by their batch rows; None arrays reach the kernel as None.
    """
    present = [(x, whole) for x, whole in inputs if x is not None]
    where_none = [x is None for x, _ in inputs]
    rows = out_shapes[0].shape[-2]

    def wrapped(*refs):
        it = iter(refs[: len(present)])
        ins = [None if none else next(it) for none in where_none]
        kernel(*ins, *refs[len(present):], piece=piece, interpret=interpret)

    def spec(x, whole):
        return pl.BlockSpec(x.shape, lambda r: (0,) * x.ndim) if whole else _rows_spec(x.shape)

    return pl.pallas_call(
        wrapped,
        grid=(rows // BLOCK_ROWS,),
        in_specs=[spec(x, whole) for x, whole in present],
        out_specs=[_rows_spec(s.shape) for s in out_shapes],
        out_shape=out_shapes,
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=1),
        interpret=interpret,
        name=name,
    )(*(x for x, _ in present))


def _forward(w, b, c0, h0, xs, hm, interpret):
    n_steps, rows, f_in = xs.shape
    n = c0.shape[-1]
    xp = (xs.reshape(-1, f_in) @ w[:f_in] + b).reshape(n_steps, rows, 4 * n)
    seq = jax.ShapeDtypeStruct((n_steps, rows, n), c0.dtype)
    last = jax.ShapeDtypeStruct((rows, n), c0.dtype)
    hs, cs, i, f, g, o, c, h = _call(
        _forward_kernel,
        [(xp, False), (w[f_in:], True), (c0, False), (h0, False), (hm, False)],
        [seq] * 6 + [last] * 2, piece=state_piece(n), interpret=interpret, name="lstm_forward")
    return (c, h), hs, cs, (i, f, g, o)


def _pad_rows(x, pad, axis):
    if x is None or pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def fused_lstm_sequence(w: jax.Array, b: jax.Array, c0: jax.Array, h0: jax.Array, xs: jax.Array,
                        hmask: jax.Array | None = None, *, interpret: bool = False):
    """As :func:`grnn_jax.nets.lstm_scan.lstm_sequence`, with the recurrence in one kernel.

    Args:
      w, b, c0, h0, xs, hmask: as :func:`~grnn_jax.nets.lstm_scan.lstm_sequence`; float32,
        with ``state_piece(H)`` not None.
      interpret: run the kernels in Pallas's interpreter (any platform; for tests).

    Returns:
      ``((c_T, h_T), hs)``, hs (T, B, H).

    Example (interpreted, so it runs on a CPU too):
      >>> import jax, jax.numpy as jnp
      >>> w = 0.1 * jax.random.normal(jax.random.key(0), (2 + 16, 64))
      >>> z = jnp.zeros((3, 16))
      >>> (c, h), hs = fused_lstm_sequence(w, jnp.zeros(64), z, z, jnp.ones((5, 3, 2)), interpret=True)
      >>> hs.shape, bool(jnp.allclose(hs[-1], h))
      ((5, 3, 16), True)
    """
    if state_piece(c0.shape[-1]) is None:
        raise ValueError(f"the fused LSTM needs hidden 16 to 512 in multiples of 16; got {c0.shape[-1]}")
    if hmask is not None:
        hmask = jax.lax.stop_gradient(hmask)
    rows = c0.shape[0]
    pad = -rows % BLOCK_ROWS
    (c, h), hs = _lstm(w, b, _pad_rows(c0, pad, 0), _pad_rows(h0, pad, 0), _pad_rows(xs, pad, 1),
                       _pad_rows(hmask, pad, 0), interpret)
    return (c[:rows], h[:rows]), hs[:, :rows]


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _lstm(w, b, c0, h0, xs, hm, interpret):
    carry, hs, _, _ = _forward(w, b, c0, h0, xs, hm, interpret)
    return carry, hs


def _fwd(w, b, c0, h0, xs, hm, interpret):
    carry, hs, cs, acts = _forward(w, b, c0, h0, xs, hm, interpret)
    return (carry, hs), (w, c0, h0, xs, hs, cs, acts, hm)


def _bwd(interpret, res, cts):
    w, c0, h0, xs, hs, cs, acts, hm = res
    (dc_last, dh_last), dhs = cts
    n_steps, rows, f_in = xs.shape
    n = c0.shape[-1]
    das, dc0, dh0 = _call(
        _backward_kernel,
        [(dhs, False), (cs, False), *((a, False) for a in acts), (w[f_in:], True), (c0, False),
         (hm, False), (dc_last, False), (dh_last, False)],
        [jax.ShapeDtypeStruct((n_steps, rows, 4 * n), c0.dtype)]
        + [jax.ShapeDtypeStruct((rows, n), c0.dtype)] * 2,
        piece=state_piece(n), interpret=interpret, name="lstm_backward")
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    if hm is not None:
        h_prev = h_prev * hm
    xh = jnp.concatenate([xs, h_prev], axis=-1).reshape(-1, f_in + n)
    das2 = das.reshape(-1, 4 * n)
    dw = xh.T @ das2
    dxs = (das2 @ w[:f_in].T).reshape(n_steps, rows, f_in)
    dhm = None if hm is None else jnp.zeros_like(hm)
    return dw, jnp.sum(das2, axis=0), dc0, dh0, dxs, dhm


_lstm.defvjp(_fwd, _bwd)
