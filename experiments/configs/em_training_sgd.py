"""Follow-up of ``em_training.py``: does ngem's preconditioning pay off without Adam? Adam
rescales every parameter's step by its own gradient history, which may undo the scale a
natural-gradient step sets; plain SGD with momentum keeps it. nll and ngem on the switching
process and on storms under SGD (momentum 0.9, the same warm-up + cosine schedule and
clipping), each at several peak learning rates, so that each method can be judged at its
best one."""

from pathlib import Path

from grnn_jax.train import load_config_file

LEARNING_RATES = (0.03, 0.1, 0.3, 1.0)


def get_config() -> dict:
    cfg = load_config_file(Path(__file__).with_name("em_training.py"))
    cfg["objectives"] = ["nll", "ngem"]
    cfg["inits"] = ["default"]
    cfg["datasets"] = {
        f"{name} sgd {lr:g}": {**cfg["datasets"][name], "optimizer": "sgd", "momentum": 0.9,
                               "learning_rate": lr}
        for name in ("switching", "storms") for lr in LEARNING_RATES
    }
    return cfg
