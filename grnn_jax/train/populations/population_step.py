"""The pieces of a population (see :mod:`grnn_jax.train.populations.population`): members' seeds and
hyper-parameters, the optimiser with injected learning rate and weight decay, the stacked
initial state, the vmapped train step with frozen members, the members' batches, and
the members' held-out NLL."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grnn_jax import model as model_lib
from grnn_jax.data import Batch, Sequences, Standardiser, batch_at
from grnn_jax.train.config import TrainConfig
from grnn_jax.train.optimizer import make_schedule, optimizer_chain
from grnn_jax.train.step import TrainState, heldout_sum, make_train_step
from grnn_jax._util.dtypes import default_float


class Members(NamedTuple):
    """What differs between the members of a population (one entry per member).

    Attributes:
      seeds: initialisation and batch-order seed of each member.
      learning_rates: peak learning rate of each member.
      weight_decays: AdamW weight decay of each member.
    """

    seeds: tuple[int, ...]
    learning_rates: tuple[float, ...]
    weight_decays: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.seeds)

    def config(self, base: TrainConfig, i: int) -> TrainConfig:
        """The single-run config member ``i`` trains like."""
        return base.replace(seed=int(self.seeds[i]), learning_rate=float(self.learning_rates[i]),
                            weight_decay=float(self.weight_decays[i]))


def default_members(config: TrainConfig, population: int, *, lr_spread: float = 4.0) -> Members:
    """P members around ``config``: seeds ``seed, seed + 1, ...``; learning rates spaced
    log-evenly over ``[lr / sqrt(lr_spread), lr * sqrt(lr_spread)]`` (all ``lr`` when P = 1);
    the config's weight decay.

    Raises:
      ValueError: ``population`` below 1 or ``lr_spread`` below 1.

    Example:
      >>> from grnn_jax.train import ModelConfig, TrainConfig
      >>> m = default_members(TrainConfig(ModelConfig(n_features=1), learning_rate=1e-3), 3)
      >>> m.seeds, [round(v, 6) for v in m.learning_rates]
      ((0, 1, 2), [0.0005, 0.001, 0.002])
    """
    check_population(population)
    if not (lr_spread >= 1):
        raise ValueError(f"lr_spread must be >= 1; got {lr_spread}")
    exps = np.linspace(-0.5, 0.5, population) if population > 1 else np.zeros(1)
    return Members(
        seeds=tuple(int(config.seed) + i for i in range(population)),
        learning_rates=tuple(float(config.learning_rate * lr_spread**e) for e in exps),
        weight_decays=(float(config.weight_decay),) * population,
    )


def check_population(population) -> int:
    """Returns ``population`` as an int, or raises a one-line ValueError."""
    if isinstance(population, bool) or int(population) != population or population < 1:
        raise ValueError(f"--population must be a positive integer; got {population!r}")
    return int(population)


def check_members(members: Members) -> Members:
    """Returns ``members`` or raises a one-line ValueError (sizes, learning rates, decays)."""
    p = len(members.seeds)
    if p < 1 or len(members.learning_rates) != p or len(members.weight_decays) != p:
        raise ValueError("members needs one seed, learning rate and weight decay per member "
                         f"(got {len(members.seeds)}, {len(members.learning_rates)}, "
                         f"{len(members.weight_decays)})")
    for lr in members.learning_rates:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"every member's learning rate must be positive; got {lr!r}")
    for wd in members.weight_decays:
        if not (math.isfinite(wd) and wd >= 0):
            raise ValueError(f"every member's weight decay must be >= 0; got {wd!r}")
    return members


def make_population_optimizer(
    *, num_steps: int, warmup_steps: int, clip_norm: float, end_lr_fraction: float = 0.01,
    optimizer: str = "adamw", momentum: float = 0.9,
) -> optax.GradientTransformation:
    """:func:`~grnn_jax.train.make_optimizer` with ``learning_rate`` and ``weight_decay``
    as state (``opt_state.hyperparams``), so that each member of a population has its own.

    ``optimizer`` and ``momentum`` are shared by all members (see
    :func:`~grnn_jax.train.optimizer_chain`). The schedule is ``learning_rate * s(t)``
    with ``s`` the unit warm-up + cosine schedule, the same values as
    ``make_schedule(learning_rate=...)``. ``opt_state.inner_state`` has the structure of
    ``make_optimizer``'s state.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = make_population_optimizer(num_steps=10, warmup_steps=0, clip_norm=1.0)
      >>> s = tx.init({"w": jnp.zeros(2)})
      >>> sorted(s.hyperparams)
      ['learning_rate', 'weight_decay']
    """
    unit = make_schedule(learning_rate=1.0, num_steps=num_steps, warmup_steps=warmup_steps,
                         end_lr_fraction=end_lr_fraction)

    def factory(learning_rate, weight_decay):
        return optimizer_chain(lambda count: learning_rate * unit(count),
                               weight_decay=weight_decay, clip_norm=clip_norm,
                               optimizer=optimizer, momentum=momentum)

    return optax.inject_hyperparams(factory)(learning_rate=1.0, weight_decay=0.0)


def init_population(net, tx, example: Batch, members: Members, *, params=None,
                    aux_state=None) -> TrainState:
    """The stacked state before the first step: member ``i`` initialised from
    ``jax.random.key(seeds[i])`` (as a single run with that seed), with its hyper-parameters.

    Args:
      net: the network.
      tx: from :func:`make_population_optimizer`.
      example: a batch, or a stacked one (only its feature sizes matter).
      members: seeds and hyper-parameters.
      params: the members' initial variables, stacked (leading axis P), e.g. each from
        :func:`~grnn_jax.train.em_training.em_init.initial_variables`; None draws them from the seeds.
      aux_state: the members' initial non-gradient state, stacked; None means ``{}``.

    Returns:
      TrainState whose leaves have a leading axis of size P.
    """
    members = check_members(members)
    dtype = default_float()
    lrs = jnp.asarray(members.learning_rates, dtype)
    wds = jnp.asarray(members.weight_decays, dtype)
    aux_state = {} if aux_state is None else aux_state
    if params is not None:
        return _stack_states_jit(tx, params, aux_state, lrs, wds)
    keys = jnp.stack([jax.random.key(int(s)) for s in members.seeds])
    # Parameters depend on the feature sizes only: one step of one row, stacked batch or not.
    x = jnp.asarray(example.x).reshape((-1,) + example.x.shape[-2:])[:1, :1]
    u = None if example.u is None else jnp.asarray(example.u).reshape(
        (-1,) + example.u.shape[-2:])[:1, :1]
    return _init_population_jit(net, tx, keys, x, u, lrs, wds)


def _member_state(tx, params, aux_state, lr, wd) -> TrainState:
    opt = tx.init(params)
    hp = dict(opt.hyperparams, learning_rate=lr.astype(opt.hyperparams["learning_rate"].dtype),
              weight_decay=wd.astype(opt.hyperparams["weight_decay"].dtype))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(zero, params, aux_state, opt._replace(hyperparams=hp), zero, zero)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_population_jit(net, tx, keys, x, u, lrs, wds):
    def one(key, lr, wd):
        return _member_state(tx, net.init(key, x, u=u), {}, lr, wd)

    return jax.vmap(one)(keys, lrs, wds)


@functools.partial(jax.jit, static_argnums=0)
def _stack_states_jit(tx, params, aux_state, lrs, wds):
    return jax.vmap(functools.partial(_member_state, tx))(params, aux_state, lrs, wds)


def where_members(active, new, old):
    """``new`` where ``active`` (P,) is True, ``old`` elsewhere, leaf by leaf."""
    def pick(a, b):
        return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def make_population_step(net, tx, *, objective: str = "nll", aux_update=None, regulariser=None):
    """A jitted ``step(state, batch, active, keys=None) -> (state, metrics)`` for a stacked state.

    ``batch`` has a leading member axis (each member its own batch); ``active`` (P,) bool
    freezes the members where it is False (parameters, optimiser state and ``aux_state``
    alike); ``keys`` (P,) are the members' noise keys (``training.noise_key(seed)``), needed
    with an active ``regulariser`` (training-time input noise or dropout). ``objective``,
    ``aux_update`` and ``regulariser`` are those of :func:`~grnn_jax.train.make_train_step`,
    applied to each member's own state and batch (e.g. each member's EM head updated by
    stepwise EM on its own batches only). ``metrics`` are those of
    :func:`~grnn_jax.train.make_train_step`, each of shape (P,).

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> from grnn_jax.train import ModelConfig, TrainConfig
      >>> from grnn_jax.train.populations.population import population_program
      >>> cfg = TrainConfig(ModelConfig(n_features=1, n_components=1, hidden_size=4),
      ...                   num_steps=4, batch_size=4, eval_every=2)
      >>> net, tx, step = population_program(cfg)  # make_population_step(net, tx), cached
      >>> seqs = Sequences(np.random.default_rng(0).normal(size=(8, 5, 1)))
      >>> members = Members((0, 1, 2), (1e-2, 1e-3, 1e-3), (0.0, 0.0, 0.0))
      >>> b = population_batch(seqs, 0, members.seeds, batch_size=4)
      >>> state = init_population(net, tx, b, members)
      >>> state, m = step(state, b, np.array([True, False, True]))
      >>> state.step.tolist(), m["loss"].shape
      ([1, 0, 1], (3,))
    """
    step = make_train_step(net, tx, objective=objective, aux_update=aux_update,
                           regulariser=regulariser)

    @jax.jit
    def population_step(state: TrainState, batch: Batch, active: jax.Array, keys=None):
        if keys is None:
            new, metrics = jax.vmap(step)(state, batch)
        else:
            new, metrics = jax.vmap(step)(state, batch, keys)
        return where_members(active, new, state), metrics

    return population_step


def population_batch(seqs: Sequences, step: int, seeds, *, batch_size: int,
                     dtype=np.float32) -> Batch:
    """The members' batches at global ``step``, stacked: member ``i`` gets
    ``batch_at(seqs, step, seed=seeds[i])``, the batch a single run with that seed sees.

    Returns:
      Batch with ``x`` (P, B, T, D), ``lengths`` (P, B).
    """
    bs = [batch_at(seqs, step, batch_size=batch_size, seed=int(s), dtype=dtype) for s in seeds]
    u = None if bs[0].u is None else np.stack([b.u for b in bs])
    return Batch(np.stack([b.x for b in bs]), np.stack([b.lengths for b in bs]), u)


@functools.partial(jax.jit, static_argnums=0)
def _members_log_lik(net, params, x, lengths, u):
    def one(p):
        lp = model_lib.step_log_probs(net, p, x, lengths, u)
        mask = model_lib.mask_from_lengths(lengths, x.shape[1])
        return jnp.sum(jnp.where(mask, lp, 0.0))

    return jax.vmap(one)(params)


def evaluate_population(net, params, seqs: Sequences, *, standardiser: Standardiser | None = None,
                        batch_size: int = 64) -> np.ndarray:
    """Held-out NLL per observed step of every member, original units (as
    :func:`~grnn_jax.train.evaluate` for each).

    Args:
      net: the network.
      params: stacked variables, leading axis P (with an EM head, its components included:
        ``model_variables(state.params, state.aux_state)``).
      seqs: sequences in original units.
      standardiser: the map the members were trained under (None: identity).
      batch_size: rows per evaluation batch.

    Returns:
      (P,) float64 NLLs.
    """
    total, n, log_det = heldout_sum(lambda b: _members_log_lik(net, params, *b), seqs,
                                    standardiser, batch_size)
    return -total / n + log_det
