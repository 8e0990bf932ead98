"""``em_training.py`` with the EM-updated head (``--head em``: global components moved by
stepwise EM, the network emits the mixing weights) on the switching process, geyser,
eustock and storms (same sizes, budgets and seeds as ``em_training.py``)."""

from pathlib import Path

from grnn_jax.train import load_config_file


def get_config() -> dict:
    cfg = load_config_file(Path(__file__).with_name("em_training.py"))
    cfg["heads"] = ["em"]
    return cfg
