"""Follow-up of ``em_training.py`` on the switching process: is ngem held back by the step
size or by the full-covariance block? The same runs at a 3x larger learning rate, and with
diagonal components (no off-diagonal Cholesky entries)."""

from pathlib import Path

from grnn_jax.train import load_config_file


def get_config() -> dict:
    cfg = load_config_file(Path(__file__).with_name("em_training.py"))
    base = cfg["datasets"]["switching"]
    cfg["objectives"] = ["nll", "ngem"]
    cfg["datasets"] = {
        "switching lr 1e-2": {**base, "learning_rate": 1e-2},
        "switching diag": {**base, "model": {**base["model"], "covariance_type": "diag"}},
    }
    return cfg
