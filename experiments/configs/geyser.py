"""Old Faithful (waiting, duration), 299 eruptions in time order, evaluated by rolling origin:
three folds whose test blocks are the last 3 x 30 eruptions; each fold validates on the 30
eruptions before its test block and trains on all earlier ones (cut into 50-step chunks).

Chosen on validation only (``experiments/sweep.py``, seeds 0-2): with 209 training steps,
small networks over-fit within a few hundred steps; a 16-unit LSTM with six diagonal
components had the lowest mean validation NLL and the smallest spread over seeds.
"""


def get_config() -> dict:
    return {
        "dataset": "geyser",
        "window": 50,
        "model": {"n_components": 6, "covariance_type": "diag", "cell": "lstm", "hidden_size": 16},
        "num_steps": 400,
        "batch_size": 5,
        "learning_rate": 3e-3,
        "warmup_steps": 20,
        "eval_every": 10,
        "patience": 15,
        "seed": 0,
        "experiment": {
            "seeds": [0, 1, 2],
            "folds": 3,
            "fold_block": 30,
            "baseline_components": [1, 2, 3, 4, 5, 6],
            "hmm_iter": 200,
            "arhmm_lags": [1],  # one lag: each (K, lags) AR-HMM fit compiles anew
            "n_samples": 3,
            "sample_steps": 45,
            "density_steps": [1, 5, 10, 20],
        },
    }
