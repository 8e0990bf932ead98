"""Atlantic storm tracks (lat, long, wind, pressure; 655 tracks, split by track 70/15/15).

Bigger than geyser (13.5k training steps): a 64-unit LSTM with five full-covariance
components, one seed. hmmlearn's Baum-Welch takes seconds per iteration on this many steps
on a small CPU, so the HMM grid and its iterations are kept short.
"""


def get_config() -> dict:
    return {
        "dataset": "storms",
        "split_seed": 0,
        "model": {"n_components": 5, "covariance_type": "full", "cell": "lstm", "hidden_size": 64},
        "num_steps": 1500,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "warmup_steps": 75,
        "eval_every": 50,
        "patience": 10,
        "seed": 0,
        "experiment": {
            "baseline_components": [2, 4, 8],
            "hmm_iter": 25,
            "seeds": [0],
            "n_samples": 3,
            "sample_steps": 40,
            "density_steps": [2, 8, 16, 24],
            "density_dims": [1, 0],
        },
    }
