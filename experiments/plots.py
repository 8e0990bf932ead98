"""Figures of the main experiment (matplotlib, Agg backend; every function writes one PNG).

Mixtures handed to these functions are in the data's original units (see
``to_original_units``), so axes read in minutes, knots, degrees...
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from grnn_jax import gmm  # noqa: E402
from grnn_jax.gmm import calibration  # noqa: E402
from grnn_jax.gmm import Standardiser  # noqa: E402

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


@jax.jit
def to_original_units(g: gmm.GMM, st: Standardiser) -> gmm.GMM:
    """The mixture of ``x = st.inverse(z)`` when ``z`` follows ``g``, as a full-covariance GMM."""
    return st.gmm_from(gmm.as_full(g))


def _marginal_2d(g: gmm.GMM, dims: tuple[int, int]) -> gmm.GMM:
    """The joint marginal of two dimensions of a full-covariance mixture."""
    idx = jnp.asarray(dims)
    cov = gmm.covariances(g)[..., idx[:, None], idx[None, :]]
    return gmm.from_covariances(g.logits, g.means[..., idx], cov, "full")


def learning_curves(runs: dict[str, list[dict]], path: str | Path, *,
                    log_jacobian: float = 0.0) -> None:
    """Training loss and validation NLL against the step, one colour per run.

    Args:
      runs: name -> the run's ``metrics.jsonl`` records (``kind`` "train"/"eval").
      path: the PNG to write.
      log_jacobian: added to the training loss (model units) to put it in original units.
    """
    fig, ax = plt.subplots(figsize=(9, 4))
    for (name, records), c in zip(runs.items(), COLORS):
        tr = [r for r in records if r.get("kind") == "train" and np.isfinite(r.get("loss", np.nan))]
        ev = [r for r in records if r.get("kind") == "eval"]
        if tr:
            ax.plot([r["step"] for r in tr], [r["loss"] + log_jacobian for r in tr], color=c,
                    alpha=0.45, lw=1, label=f"{name}: train")
        if ev:
            ax.plot([r["step"] for r in ev], [r["val_nll"] for r in ev], color=c, lw=2,
                    label=f"{name}: validation")
            best = min(ev, key=lambda r: r["val_nll"])
            ax.plot(best["step"], best["val_nll"], "o", color=c, ms=6)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("NLL (nats per step, original units)")
    ax.set_title("Learning curves (dot: best validation, the kept parameters)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: covers no curve
    ax.grid(alpha=0.3)
    _save(fig, path)


def next_step_densities(x: np.ndarray, models: dict[str, gmm.GMM], steps: Sequence[int],
                        path: str | Path, *, feature_names: Sequence[str],
                        dims: tuple[int, int] = (0, 1), grid: int = 120) -> None:
    """Predicted density of the next observation at a few steps, with the true one marked.

    Args:
      x: (T, D) one held-out sequence, original units.
      models: name -> per-step predictive mixtures with batch shape (T,), original units.
      steps: the steps t to show (each panel: p(x_t | x_<t) and x_t).
      path: the PNG to write.
      feature_names: names of the D features.
      dims: the two dimensions to show (the density is their joint marginal).
      grid: grid points per axis.
    """
    a, b = dims
    pad_a = 0.15 * np.ptp(x[:, a])
    pad_b = 0.15 * np.ptp(x[:, b])
    ga = np.linspace(x[:, a].min() - pad_a, x[:, a].max() + pad_a, grid)
    gb = np.linspace(x[:, b].min() - pad_b, x[:, b].max() + pad_b, grid)
    mesh = np.stack(np.meshgrid(ga, gb), axis=-1)  # (grid, grid, 2)
    fig, axes = plt.subplots(len(models), len(steps), squeeze=False, layout="constrained",
                             figsize=(3.2 * len(steps) + 1.2, 3.0 * len(models) + 0.6))
    for i, (name, g) in enumerate(models.items()):
        dens_steps = np.asarray(_grid_density(g, jnp.asarray(steps), jnp.asarray(mesh), dims))
        # One colour scale per row, so panels of a model compare directly.
        levels = np.linspace(0.0, float(dens_steps.max()) or 1.0, 13)
        for j, t in enumerate(steps):
            ax = axes[i, j]
            filled = ax.contourf(ga, gb, dens_steps[j], levels=levels, cmap="Blues")
            ax.plot(x[:t, a], x[:t, b], ".", color="0.55", ms=3, label="earlier steps")
            if t > 0:
                ax.plot(x[t - 1, a], x[t - 1, b], "s", color="tab:orange", ms=5, mec="k", mew=0.5,
                        label="previous step x[t-1]")
            ax.plot(x[t, a], x[t, b], "*", color="tab:red", ms=12, mec="k", mew=0.5,
                    label="what happened x[t]")
            if i == 0:
                ax.set_title(f"step t={t}")
            if j == 0:
                ax.set_ylabel(f"{name}\n{feature_names[b]}")
            if i == len(models) - 1:
                ax.set_xlabel(feature_names[a])
        cbar = fig.colorbar(filled, ax=list(axes[i]), fraction=0.03, pad=0.01, format="%.3g")
        cbar.set_label("density", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8,
               frameon=False)
    fig.suptitle("Predicted density of the next observation p(x_t | x_<t), held-out sequence")
    _save(fig, path, tight=False)


@functools.partial(jax.jit, static_argnames="dims")
def _grid_density(g: gmm.GMM, steps: jax.Array, mesh: jax.Array, dims: tuple[int, int]) -> jax.Array:
    """(len(steps), G, G) joint density of ``dims`` at the chosen steps on a (G, G, 2) mesh."""
    g2 = _marginal_2d(jax.tree_util.tree_map(lambda a: a[steps][:, None, None], g), dims)
    return jnp.exp(gmm.log_prob(g2, mesh.astype(g2.means.dtype)))


def samples_vs_real(real: Sequence[np.ndarray], sampled: np.ndarray, path: str | Path, *,
                    feature_names: Sequence[str], n_show: int = 3) -> None:
    """Sampled sequences beside real ones: each feature against the step, and a scatter of
    consecutive pairs ``(x_{t-1}[d], x_t[d'])`` showing the sequential structure.

    The time-series panels share one step axis and show the same number of steps on both
    sides: real sequences longer than the samples are cut to the samples' length there.

    Args:
      real: held-out sequences, each (T_i, D), original units.
      sampled: (N, T, D) sequences generated by the model, original units.
      path: the PNG to write.
      feature_names: names of the D features.
      n_show: sequences drawn per side in the time-series panels.
    """
    d = sampled.shape[-1]
    fig, axes = plt.subplots(d + 1, 2, figsize=(11, 2.2 * (d + 1) + 0.5), squeeze=False)
    steps = sampled.shape[1]
    shown = ([r[:steps] for r in list(real)[:n_show]], list(sampled)[:n_show])
    n_real, n_sampled = len(shown[0]), len(shown[1])
    sides = (("held-out test sequence" if n_real == 1 else f"{n_real} held-out test sequences",
              "test sequence", shown[0]),
             ("sampled from the GRNN" if n_sampled == 1 else f"{n_sampled} sequences sampled from the GRNN",
              "sample", shown[1]))
    for col, (title, what, seqs) in enumerate(sides):
        for k in range(d):
            ax = axes[k, col]
            if (k, col) != (0, 0):
                ax.sharex(axes[0, 0])
            for i, (s, c) in enumerate(zip(seqs, COLORS)):
                label = what if len(seqs) == 1 else f"{what} {i + 1}"
                ax.plot(np.arange(len(s)), s[:, k], ".-", color=c, ms=3, lw=0.8, label=label)
            ax.set_ylabel(feature_names[k])
            if k == 0:
                ax.set_title(title)
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes[d - 1, col].set_xlabel("step")
    # Lag-one scatter of the last feature against the next step's first one (geyser:
    # duration of an eruption against the waiting time before the next).
    src, dst = d - 1, 0
    for col, seqs in enumerate((list(real), list(sampled))):
        ax = axes[d, col]
        for s in seqs:
            ax.plot(s[:-1, src], s[1:, dst], ".", color="0.3" if col == 0 else "tab:blue",
                    ms=3, alpha=0.7)
        ax.set_xlabel(f"{feature_names[src]} at t-1")
        ax.set_ylabel(f"{feature_names[dst]} at t")
        what = ("all samples" if col else "all steps of the test sequence" if len(seqs) == 1
                else "all test sequences")
        ax.set_title(f"lag-one pairs, {what}", fontsize=9)
    _share_limits(axes[d, 0], axes[d, 1])
    for k in range(d):
        _share_limits(axes[k, 0], axes[k, 1], x=False)
    axes[0, 0].set_xlim(-0.5, steps - 0.5)
    fig.suptitle(f"Held-out test sequence{'' if len(list(real)) == 1 else 's'} and sequences "
                 "sampled from the GRNN")
    _save(fig, path)


def pit_ecdfs(pits: dict[str, np.ndarray], path: str | Path, *, feature_names: Sequence[str],
              alpha: float = 0.05) -> None:
    """PIT ECDF minus the uniform CDF, one panel per feature, with the simultaneous
    ``1 - alpha`` band (DKW) of n uniform points: inside it, n points show no miscalibration.

    Args:
      pits: name -> (N, D) PIT values of the N observed test steps.
      path: the PNG to write.
      feature_names: names of the D features.
      alpha: level of the band.
    """
    n, d = next(iter(pits.values())).shape
    eps = calibration.ecdf_band(n, alpha)
    fig, axes = plt.subplots(1, d, figsize=(3.4 * d + 2.6, 3.2), squeeze=False, sharey=True)
    u = np.linspace(0.0, 1.0, 201)
    for k in range(d):
        ax = axes[0, k]
        ax.fill_between(u, -eps, eps, color="0.85", label=f"{int(round(100 * (1 - alpha)))}% band, n={n}")
        ax.axhline(0.0, color="k", lw=0.6)
        for (name, pit), c in zip(pits.items(), COLORS):
            srt = np.sort(pit[:, k])
            ecdf = np.searchsorted(srt, u, side="right") / srt.size
            ax.plot(u, ecdf - u, color=c, lw=1.4, label=name)
        ax.set_title(feature_names[k])
        ax.set_xlabel("PIT value u")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("ECDF(u) - u")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Calibration of the one-step predictions on all test steps")
    _save(fig, path)


def _share_limits(ax1, ax2, *, x: bool = True) -> None:
    if x:
        lo = min(ax1.get_xlim()[0], ax2.get_xlim()[0])
        hi = max(ax1.get_xlim()[1], ax2.get_xlim()[1])
        ax1.set_xlim(lo, hi)
        ax2.set_xlim(lo, hi)
    lo = min(ax1.get_ylim()[0], ax2.get_ylim()[0])
    hi = max(ax1.get_ylim()[1], ax2.get_ylim()[1])
    ax1.set_ylim(lo, hi)
    ax2.set_ylim(lo, hi)


def _save(fig, path: str | Path, *, tight: bool = True) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if tight:  # figures with row colour bars use the constrained layout instead
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
