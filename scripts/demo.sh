#!/usr/bin/env bash
# Runs the main experiment (GRNN vs baselines on held-out Old Faithful eruptions) into
# runs/main/: report.md, results.json and figures. Creates .venv on first use.
# Extra arguments go to experiments/main.py, e.g. --config experiments/configs/storms.py.
GRNN_EXTRAS="experiments"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export MPLBACKEND=Agg
exec python -m experiments.main --workdir "${GRNN_DEMO_WORKDIR:-runs/main}" "$@"
