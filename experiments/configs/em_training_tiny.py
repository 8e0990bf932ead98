"""A tiny CPU variant of ``em_training.py`` for the smoke test: a few steps of a very small
model on the switching process: ngem, default and EM initialisation, both heads."""


def get_config() -> dict:
    return {
        "objectives": ["ngem"],
        "inits": ["default", "em"],
        "heads": ["mdn", "em"],
        "seeds": [0],
        "target_margin": 0.05,
        "datasets": {
            "switching": {
                "dataset": "switching", "n_features": 2, "n_sequences": 8, "length": 10,
                "model": {"n_components": 2, "covariance_type": "full", "hidden_size": 4},
                "num_steps": 4, "batch_size": 4, "eval_every": 2, "warmup_steps": 1,
                "learning_rate": 3e-3,
            },
        },
    }
