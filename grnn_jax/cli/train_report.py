"""What ``grnn train`` and ``grnn evaluate`` print: one JSON object (``--json``) or a few
lines for people, built from what the library returned."""

from __future__ import annotations

from pathlib import Path

import jax

from grnn_jax._util import jsonio
from grnn_jax.train.convergence import run_warning


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def emit(report: dict, as_json: bool, lines) -> None:
    """Prints ``report`` as JSON, or the lines ``lines(report)`` gives."""
    if as_json:
        print(jsonio.dumps(report))
    else:
        for line in lines(report):
            print(line)


def train_report(config, metrics: list[dict], train_seqs, val_seqs, workdir: Path, mesh,
                 data: dict | None) -> dict:
    """The record of one ``grnn train`` run: data sizes, the best evaluation, the config."""
    evals = [m for m in metrics if m.get("kind") == "eval"]
    best = min(evals, key=lambda m: m["val_nll"]) if evals else None
    return {
        "workdir": str(workdir),
        "devices": 1 if mesh is None else mesh.size,
        "num_processes": jax.process_count(),
        "n_train_sequences": train_seqs.n_sequences,
        "n_train_steps": train_seqs.n_steps,
        "n_val_steps": 0 if val_seqs is None else val_seqs.n_steps,
        "steps": max((m["step"] for m in metrics), default=0),
        "best_val_nll": None if best is None else best["val_nll"],
        "best_step": None if best is None else best["step"],
        "data_columns": data,
        "warning": run_warning(metrics),
        "config": config.to_dict(),
    }


def train_lines(r: dict) -> list[str]:
    m = r["config"]["model"]
    head = " (EM-updated head)" if m["head"] == "em" else ""
    lines = [f"trained a {m['n_components']}-component {m['covariance_type']} GRNN{head} "
             f"({m['cell']}, {m['n_layers']}x{m['hidden_size']}) for {r['steps']} steps on "
             f"{r['n_train_steps']} steps of {plural(r['n_train_sequences'], 'sequence')}"]
    if r["best_val_nll"] is not None:
        lines.append(f"best validation NLL {r['best_val_nll']:.4f} nats/step (original units) at "
                     f"step {r['best_step']}; those parameters are kept as 'best'")
    lines.append(f"run saved in {r['workdir']}")
    lines += [r["warning"]] if r.get("warning") else []
    return race_lines(r["race"]) + lines if r.get("race") else lines


def race_lines(table: list) -> list[str]:
    """One line per race candidate: its validation NLL per round and how far behind the
    round's best it was (paired z-score; see :func:`grnn_jax.train.populations.rank_candidates`)."""
    lines = []
    for c in table:
        rounds = "  ".join("-" if v is None else f"{v:.4f}" + ("" if z is None else f" (z {z:.1f})")
                           for v, z in zip(c["val_nll"], c["z"]))
        size = f", K {c['n_components']}" + (", started by EM" if c.get("em_init") else "")
        lines.append(f"race: {c['name']:<9} {c['head']} head, {plural(c['lags'], 'lag')}{size}; "
                     f"validation NLL by round: {rounds}")
    won = next(c["name"] for c in table if c["won"])
    return lines + [f"race: chose {won} (z: how far the round's best was ahead, in paired "
                    "standard errors; a later candidate needs z > 2 to rank ahead)"]


def population_report(args, res, record: dict, config, workdir: Path, mesh) -> dict:
    """The record of one ``grnn train --population`` run (``record``: population.json)."""
    best = res.rows[res.best]
    return {"workdir": str(workdir), "population": args.population,
            "devices": 1 if mesh is None else mesh.size, "best_member": res.best,
            "best_val_nll": best["best_val_nll"], "best_step": best["best_step"],
            "members": res.rows, "ensemble": record["ensemble"],
            "config": res.members.config(config, res.best).to_dict()}


def population_lines(r: dict) -> list[str]:
    lines = [f"member {m['member']}: seed {m['seed']} lr {m['learning_rate']:.3g} "
             f"wd {m['weight_decay']:.3g}  best validation NLL "
             + ("-" if m["best_val_nll"] is None else f"{m['best_val_nll']:.4f}")
             + f" at step {m['best_step']}" for m in r["members"]]
    where = "" if r["devices"] == 1 else f" (trained on {plural(r['devices'], 'device')})"
    lines.append(f"kept member {r['best_member']} as the run in {r['workdir']}{where}")
    if r["ensemble"]:
        e = r["ensemble"]
        lines.append(f"ensemble of members {e['members']}: validation NLL {e['val_nll']:.4f} nats/step")
    return lines


def evaluate_lines(r: dict) -> list[str]:
    return [f"nll_per_step {r['nll_per_step']:.6f}  (nats per observed step, original units)",
            f"log_likelihood {r['log_likelihood']:.6f}",
            f"n_steps {r['n_steps']}"]
