"""A tiny CPU configuration for smoke tests: a few optimiser steps of a very small model."""


def get_config() -> dict:
    return {
        "dataset": "geyser",
        "window": 20,
        "model": {"n_components": 2, "covariance_type": "full", "cell": "gru", "hidden_size": 4},
        "num_steps": 2,
        "batch_size": 2,
        "warmup_steps": 1,
        "eval_every": 1,
        "log_every": 1,
        "patience": 0,
        "seed": 0,
        "experiment": {
            "baseline_components": [2],
            "hmm_iter": 5,
            "n_samples": 2,
            "sample_steps": 6,
            "density_steps": [1, 2],
            "seeds": [0, 1],
            "arhmm_lags": [1],
        },
    }
