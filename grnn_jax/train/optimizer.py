"""The learning-rate schedule and the optimiser: gradient clipping, then AdamW or SGD with
momentum, with weight decay decoupled from the gradient in both.

``make_optimizer`` builds it from Python numbers (one run); ``optimizer_chain`` is the
shared recipe, which :func:`grnn_jax.train.populations.population_step.make_population_optimizer`
also calls with per-member learning rates and weight decays as arrays.
"""

from __future__ import annotations

import math

import optax

OPTIMIZERS = ("adamw", "sgd")


def check_optimizer(optimizer, momentum) -> None:
    """Raises ValueError unless ``optimizer`` is one of ``OPTIMIZERS`` and ``momentum`` lies
    in [0, 1)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            math.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must lie in [0, 1); got {momentum!r}")


def make_schedule(
    *, learning_rate: float, num_steps: int, warmup_steps: int, end_lr_fraction: float = 0.01
) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate``, then cosine decay to
    ``learning_rate * end_lr_fraction`` at ``num_steps``.

    Example:
      >>> from grnn_jax.train import make_schedule
      >>> f = make_schedule(learning_rate=1.0, num_steps=10, warmup_steps=2)
      >>> [round(float(f(i)), 3) for i in (0, 1, 2, 10)]
      [0.0, 0.5, 1.0, 0.01]
    """
    warmup = int(min(warmup_steps, max(num_steps - 1, 0)))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1), end_value=learning_rate * end_lr_fraction,
    )


def optimizer_chain(
    schedule: optax.ScalarOrSchedule, *, weight_decay, clip_norm: float,
    optimizer: str = "adamw", momentum: float = 0.9,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)``, then the update of ``optimizer`` at the step size
    ``schedule``:

    * ``"adamw"``: ``optax.adamw`` (defaults b1=0.9, b2=0.999, eps=1e-8);
    * ``"sgd"``: heavy-ball momentum ``m <- momentum * m + g`` (0: plain SGD), step
      ``-lr * (m + weight_decay * params)``: the decay is decoupled from the momentum as
      AdamW decouples it from Adam's moments.

    ``weight_decay`` may be a traced array (per-member values in a population).
    """
    check_optimizer(optimizer, momentum)
    clip = optax.clip_by_global_norm(clip_norm)
    if optimizer == "adamw":
        return optax.chain(clip, optax.adamw(schedule, weight_decay=weight_decay))
    return optax.chain(
        clip,
        optax.trace(decay=momentum),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(schedule),
    )


def make_optimizer(
    *, learning_rate: float, num_steps: int, warmup_steps: int, weight_decay: float,
    clip_norm: float, end_lr_fraction: float = 0.01, optimizer: str = "adamw",
    momentum: float = 0.9,
) -> optax.GradientTransformation:
    """:func:`optimizer_chain` on :func:`make_schedule`'s schedule.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.train import make_optimizer
      >>> tx = make_optimizer(learning_rate=0.1, num_steps=100, warmup_steps=0,
      ...                     weight_decay=0.0, clip_norm=1.0, optimizer="sgd", momentum=0.0)
      >>> p = {"w": jnp.array([1.0])}
      >>> updates, _ = tx.update({"w": jnp.array([0.5])}, tx.init(p), p)
      >>> round(float(updates["w"][0]), 6)  # -lr * g at step 0
      -0.05
    """
    schedule = make_schedule(
        learning_rate=learning_rate, num_steps=num_steps, warmup_steps=warmup_steps,
        end_lr_fraction=end_lr_fraction,
    )
    return optimizer_chain(schedule, weight_decay=weight_decay, clip_norm=clip_norm,
                           optimizer=optimizer, momentum=momentum)
