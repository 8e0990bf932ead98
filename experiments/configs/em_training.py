"""EM inside training (``experiments/em_training.py``): objectives nll / gem / ngem x default /
EM initialisation, three seeds, the same network, optimiser, schedule and batches per data
set. Sizes fit the whole run into about 15 minutes on two CPU cores."""


def get_config() -> dict:
    common = {"warmup_steps": 10, "learning_rate": 3e-3}
    return {
        "objectives": ["nll", "gem", "ngem"],
        "inits": ["default", "em"],
        "seeds": [0, 1, 2],
        "target_margin": 0.05,
        "datasets": {
            "switching": {
                "dataset": "switching", "n_features": 2, "n_sequences": 48, "length": 60,
                "model": {"n_components": 3, "covariance_type": "full", "hidden_size": 16},
                "num_steps": 600, "batch_size": 16, "eval_every": 20, **common,
            },
            "geyser": {
                "dataset": "geyser", "window": 50,
                "model": {"n_components": 4, "covariance_type": "diag", "hidden_size": 16},
                "num_steps": 300, "batch_size": 5, "eval_every": 10, **common,
            },
            "eustock": {
                "dataset": "eustock",
                "model": {"n_components": 3, "covariance_type": "full", "hidden_size": 16},
                "num_steps": 400, "batch_size": 14, "eval_every": 20, **common,
            },
            "storms": {
                "dataset": "storms",
                "model": {"n_components": 3, "covariance_type": "full", "hidden_size": 32},
                "num_steps": 400, "batch_size": 32, "eval_every": 20, **common,
            },
        },
    }
