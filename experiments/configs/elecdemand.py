"""Half-hourly electricity demand and temperature in Victoria, 2014 (fpp2 ``elecdemand``),
one 48-step sequence per day (365 days), split by day 70/15/15.

Settings fixed before any run, not tuned: a 32-unit LSTM with four full-covariance
components, as for weather. hmmlearn's Baum-Welch visits every training day separately in
each iteration, so the HMM baseline is the slowest part of this job.
"""


def get_config() -> dict:
    return {
        "dataset": "elecdemand",
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
            "sample_steps": 48,
            "density_steps": [1, 12, 24, 36],
            "density_dims": [1, 0],
        },
    }
