"""The train state, the jitted train step (skipping non-finite updates), and
evaluation.

The train state keeps two kinds of state apart: ``params``, the gradient-trained network
variables (the only thing ``value_and_grad``, clipping, weight decay and the optimiser see),
and ``aux_state``, non-gradient state such as EM sufficient statistics and the global
components of an EM-updated head, changed only by an explicit ``aux_update``. Both are
checkpointed. The loss is an objective chosen by name (:mod:`grnn_jax.train.objectives`);
evaluation always reports the model's own mixture log-density (``model.step_log_probs``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from grnn_jax import model as model_lib
from grnn_jax.data import Batch, Sequences, Standardiser, iterate_batches
from grnn_jax.model.regularise import Noise, Regulariser
from grnn_jax.train.objectives import get_objective
from grnn_jax._util.dtypes import default_float

AuxUpdate = Callable[[Any, Any, Any, Batch], Any]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree that Orbax saves as is).

    Attributes:
      step: global step; also the position in the batch stream (it advances on skipped
        steps too, so a bad batch is not retried forever).
      params: gradient-trained network variables (what Optax, clipping and weight decay see).
      aux_state: non-gradient state (a pytree; ``{}`` when the run has none), e.g. EM
        statistics and components, changed only by the train step's ``aux_update``.
      opt_state: Optax state of ``params`` (its step count advances only on applied updates).
      n_skipped: total non-finite steps skipped.
      n_consecutive_skipped: non-finite steps skipped since the last applied update.
    """

    step: jax.Array
    params: Any
    aux_state: Any
    opt_state: Any
    n_skipped: jax.Array
    n_consecutive_skipped: jax.Array


def init_state(
    net, tx: optax.GradientTransformation, example: Batch, *, key: jax.Array,
    params: Any = None, aux_state: Any = None,
) -> TrainState:
    """The state before the first step.

    Args:
      net: the network.
      tx: the optimiser.
      example: a batch of the training stream (only its feature sizes matter).
      key: initialises the parameters (unused when ``params`` is given).
      params: initial network variables, e.g. from an EM initialisation; None draws them.
      aux_state: initial non-gradient state; None means ``{}``.

    Returns:
      TrainState at step 0 (see the example of :func:`make_train_step`).
    """
    aux_state = {} if aux_state is None else aux_state
    if params is None:
        # Parameters do not depend on the batch or sequence length: one step of one row suffices.
        x = jnp.asarray(example.x)[:1, :1]
        u = None if example.u is None else jnp.asarray(example.u)[:1, :1]
        return _init_jit(net, tx, key, x, u, aux_state)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(zero, params, aux_state, tx.init(params), zero, zero)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_jit(net, tx, key, x, u, aux_state):
    # One jit: op by op, a recurrent network's init compiles dozens of tiny programs.
    params = net.init(key, x, u=u)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(zero, params, aux_state, tx.init(params), zero, zero)


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def noise_key(seed: int) -> jax.Array:
    """The key a run with this seed draws its training-time noise from (one per run; each
    step folds in its global step, so that a resumed run draws what an uninterrupted one
    does). Independent of the initialisation key ``jax.random.key(seed)`` and of the EM
    initialisation's ``fold_in(key, 1)``."""
    return jax.random.fold_in(jax.random.key(int(seed)), 2)


def make_train_step(
    net, tx: optax.GradientTransformation, *, objective: str = "nll",
    aux_update: AuxUpdate | None = None, regulariser: Regulariser | None = None,
):
    """A jitted, pure ``train_step(state, batch, key=None) -> (state, metrics)``.

    The gradient of the objective (by name, :func:`~grnn_jax.train.get_objective`) with
    respect to ``state.params`` goes through ``tx``; ``state.aux_state`` is read by the
    objective but never differentiated. ``aux_update(net, params, aux_state, batch) ->
    aux_state``, when given, then updates the non-gradient state from the same batch and the
    parameters the gradient was taken at (e.g. a stepwise-EM M-step).

    With an active ``regulariser`` (input noise, variational dropout:
    :mod:`grnn_jax.model.regularise`) the objective sees the network's inputs perturbed by
    noise drawn from ``fold_in(key, state.step)``; ``key`` (e.g. :func:`noise_key`) is then
    required. Without one, ``key`` is ignored.

    A step whose loss or gradient is not finite changes neither parameters, optimiser state
    nor ``aux_state``; it only advances ``state.step`` and the skip counters. ``metrics``
    holds the objective's metrics (at least ``n_obs``), ``loss`` (the objective per observed
    step, model units), ``grad_norm`` (before clipping) and ``skipped``.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import Sequences, batch_at
      >>> from grnn_jax.train import ModelConfig, init_state, make_optimizer, make_train_step
      >>> net = ModelConfig(n_features=1, n_components=2, hidden_size=4).build()
      >>> tx = make_optimizer(learning_rate=1e-2, num_steps=5, warmup_steps=0,
      ...                     weight_decay=0.0, clip_norm=1.0)
      >>> b = batch_at(Sequences(np.random.default_rng(0).normal(size=(4, 6, 1))), 0,
      ...              batch_size=4, seed=0)
      >>> state = init_state(net, tx, b, key=jax.random.key(0))
      >>> state, m = make_train_step(net, tx)(state, b)
      >>> int(state.step), bool(m["skipped"]), int(m["n_obs"])
      (1, False, 24)
    """
    loss_fn = get_objective(objective).loss
    regularised = regulariser is not None and Regulariser(*regulariser).active

    @jax.jit
    def train_step(state: TrainState, batch: Batch, key: jax.Array | None = None):
        extra = {}
        if regularised:
            if key is None:
                raise ValueError("this train step draws training noise (input noise or "
                                 "dropout): pass key= (e.g. training.noise_key(seed))")
            extra["noise"] = Noise(jax.random.fold_in(key, state.step), Regulariser(*regulariser))
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: loss_fn(net, p, state.aux_state, batch, **extra), has_aux=True
        )(state.params)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # Zeroed gradients keep NaN out of the discarded branch's arithmetic.
        safe_grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
        updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        aux_state = state.aux_state
        if aux_update is not None:
            aux_state = _select(ok, aux_update(net, state.params, state.aux_state, batch),
                                state.aux_state)
        skipped = (~ok).astype(jnp.int32)
        new_state = TrainState(
            step=state.step + 1,
            params=_select(ok, params, state.params),
            aux_state=aux_state,
            opt_state=_select(ok, opt_state, state.opt_state),
            n_skipped=state.n_skipped + skipped,
            n_consecutive_skipped=jnp.where(ok, 0, state.n_consecutive_skipped + 1),
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, skipped=~ok)
        return new_state, metrics

    return train_step


class EvalResult(NamedTuple):
    """Held-out fit.

    Attributes:
      nll: mean negative log-likelihood per observed step, nats, in the data's original
        units (the standardisation's log-Jacobian included).
      log_likelihood: total log-likelihood of all observed steps, original units.
      n_steps: number of observed steps.
      nll_standardised: ``nll`` in the model's (standardised) units.
    """

    nll: float
    log_likelihood: float
    n_steps: int
    nll_standardised: float


@functools.partial(jax.jit, static_argnums=0)
def batch_step_log_probs(net, params, x, lengths, u):
    """``(B, T)`` per-step log-densities of one batch in model units, 0 at padded steps: the
    one program :func:`evaluate` and the race's paired comparison
    (:func:`grnn_jax.train.populations.validation_blocks`) both run."""
    lp = model_lib.step_log_probs(net, params, x, lengths, u)
    return jnp.where(model_lib.mask_from_lengths(lengths, x.shape[1]), lp, 0.0)


def standardised_batches(seqs: Sequences, standardiser: Standardiser | None, batch_size: int):
    """The batches of ``seqs`` in model units (``standardiser`` None: as they are), in order;
    the last one padded (padding counts nothing)."""
    if not isinstance(seqs, Sequences):
        raise ValueError(f"seqs must be a Sequences; got {type(seqs).__name__}")
    st = standardiser if standardiser is not None else Standardiser.identity(seqs.n_features)
    z = st.transform(seqs)
    yield from iterate_batches(z, batch_size=int(min(batch_size, z.n_sequences)), dtype=default_float())


def heldout_sum(batch_fn: Callable, seqs: Sequences, standardiser: Standardiser | None,
                batch_size: int):
    """``(total, n_steps, log_det)``: ``batch_fn(batch)`` summed in float64 over
    :func:`standardised_batches`, the observed steps of ``seqs`` and the standardiser's
    log-Jacobian, so that ``-total / n_steps + log_det`` is an NLL per step in original units."""
    total = 0.0
    for b in standardised_batches(seqs, standardiser, batch_size):
        total = total + np.asarray(batch_fn(b), np.float64)
    st = standardiser if standardiser is not None else Standardiser.identity(seqs.n_features)
    return total, seqs.n_steps, float(st.log_det)


def evaluate(
    net, params, seqs: Sequences, *, standardiser: Standardiser | None = None, batch_size: int = 64
) -> EvalResult:
    """Held-out NLL per observed step in original units.

    Args:
      net: the network (``model.GRNN``).
      params: its variables.
      seqs: sequences in original units.
      standardiser: the map the model was trained under; None means the model sees ``seqs``
        as they are.
      batch_size: rows per evaluation batch (the last batch is padded; padding counts nothing).

    Returns:
      EvalResult; ``log_likelihood = -nll * n_steps``. See the example of
      :func:`grnn_jax.train.train`.
    """
    total, n, log_det = heldout_sum(
        lambda b: np.asarray(batch_step_log_probs(net, params, *b), np.float64).sum(), seqs,
        standardiser, batch_size)
    nll_std = -float(total) / n
    nll = nll_std + log_det
    return EvalResult(nll=nll, log_likelihood=-nll * n, n_steps=n, nll_standardised=nll_std)
